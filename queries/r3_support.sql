-- R3 minimum support after $strategy's removals ('none' = as scanned): per group kind, the items left, how many
-- sit in ranked groups (groups with at least the risk stage's min_items items: the rows of
-- group_risk_by_strategy), the number of groups and of ranked groups, and the ranked share. A sign-off cannot call
-- R3 clean when most items sit in groups too small to rank (analyzer/policy/gates.py, policy key
-- min_r3_ranked_share). Cluster rows count only embedded items; computed = false when the run has no clusters
-- (no embeddings kept). Parameters: $strategy.
WITH removed AS (
    SELECT DISTINCT item_id FROM recommendations WHERE strategy = $strategy
),
removed_rows AS (
    SELECT s.cluster FROM removed_scanned AS s SEMI JOIN removed USING (item_id)
),
gone AS (
    SELECT count(*) AS items, count(*) FILTER (WHERE cluster IS NOT NULL) AS clustered FROM removed_rows
),
base AS (
    SELECT group_kind, sum(items) AS items, count(*) AS groups FROM group_counts GROUP BY group_kind
),
ranked AS (
    SELECT group_kind, sum(items) AS ranked_items, count(*) AS ranked_groups
    FROM group_risk_by_strategy
    WHERE strategy = $strategy
    GROUP BY group_kind
),
kinds AS (
    SELECT * FROM (VALUES ('source'), ('shard'), ('cluster')) AS k(group_kind)
)
SELECT k.group_kind,
       k.group_kind <> 'cluster' OR EXISTS (SELECT 1 FROM clusters) AS computed,
       CAST(coalesce(b.items, 0) - CASE WHEN k.group_kind = 'cluster' THEN g.clustered ELSE g.items END AS BIGINT)
           AS items,
       CAST(coalesce(r.ranked_items, 0) AS BIGINT) AS ranked_items,
       CAST(coalesce(b.groups, 0) AS BIGINT) AS groups,
       CAST(coalesce(r.ranked_groups, 0) AS BIGINT) AS ranked_groups,
       coalesce(r.ranked_items, 0) / nullif(coalesce(b.items, 0)
           - CASE WHEN k.group_kind = 'cluster' THEN g.clustered ELSE g.items END, 0) AS ranked_share
FROM kinds AS k
CROSS JOIN gone AS g
LEFT JOIN base AS b USING (group_kind)
LEFT JOIN ranked AS r USING (group_kind)
ORDER BY k.group_kind
