-- Counts per group of the scanned dataset (nothing removed), at both operating points: the base that
-- group_risk.sql, neighbourhood_risk.sql, dataset_risk.sql and strategy_removals.sql start from, so that
-- the residual risk of a removal strategy only has to look at the removed items. Builds the table
-- group_counts (built by analyzer/risk.py after the clusters). One pass over scanned, grouping sets for the
-- three group kinds: source domain, shard (input file) and embedding cluster (items without a cluster are
-- left out of the cluster kind). Every scanned item is in exactly one source group, so the source rows
-- sum to the dataset totals. Parameters: none.
WITH flags AS (
    SELECT s.source,
           coalesce(s.file, 'unknown') AS shard,
           c.cluster,
           coalesce(s.minor_screen, false) AS m_screen,
           coalesce(s.adult_sexual_screen, false) AS a_screen,
           coalesce(s.minor_confirm, false) AS m_confirm,
           coalesce(s.adult_sexual_confirm, false) AS a_confirm
    FROM scanned AS s
    LEFT JOIN clusters AS c USING (item_id)
),
counted AS (
    SELECT grouping(source, shard, cluster) AS g,
           source,
           shard,
           cluster,
           count(*) AS items,
           count(*) FILTER (WHERE m_screen) AS minor_screen,
           count(*) FILTER (WHERE a_screen) AS adult_sexual_screen,
           count(*) FILTER (WHERE m_screen AND a_screen) AS both_screen,
           count(*) FILTER (WHERE m_confirm) AS minor_confirm,
           count(*) FILTER (WHERE a_confirm) AS adult_sexual_confirm,
           count(*) FILTER (WHERE m_confirm AND a_confirm) AS both_confirm
    FROM flags
    GROUP BY GROUPING SETS ((source), (shard), (cluster))
)
SELECT CASE g WHEN 3 THEN 'source' WHEN 5 THEN 'shard' ELSE 'cluster' END AS group_kind,
       CASE g WHEN 3 THEN source WHEN 5 THEN shard ELSE CAST(cluster AS VARCHAR) END AS group_id,
       items, minor_screen, adult_sexual_screen, both_screen, minor_confirm, adult_sexual_confirm, both_confirm
FROM counted
WHERE g <> 6 OR cluster IS NOT NULL
