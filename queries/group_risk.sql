-- R3 per group: source domain, shard (input file) and embedding cluster. Counts, rates with Wilson 95%
-- intervals, co-presence, the group's share of the dataset's co-occurring items with a Wilson 95% interval,
-- the R3 score, and the rank within each group kind (docs/risk-model.md).
-- A co-occurring item carries both concepts at $point (the R1 rule without hash matches); cooccurrence_share
-- = the group's co-occurring items / all co-occurring items of its kind (null when the kind holds none).
-- rank: co-occurring items first (a group holding them ranks above every group holding none), then the score
-- (side-by-side mixing of separate minor and adult_sexual items), co-presence and size.
-- The items removed by $strategy are left out first ('none' keeps everything), so the same query gives
-- the residual R3 after a removal strategy: the counts of the scanned dataset (table group_counts,
-- queries/group_counts.sql) minus those of the removed items, so only the removed items are read.
-- Groups with fewer than $min_items items are not ranked (their co-occurring items still count in the totals).
-- Parameters: $strategy (a strategy name or 'none'), $point ('screen' or 'confirm'), $min_items.
WITH removed AS (
    SELECT DISTINCT item_id FROM recommendations WHERE strategy = $strategy
),
removed_flags AS (
    SELECT s.source,
           coalesce(s.file, 'unknown') AS shard,
           s.cluster,
           coalesce(CASE WHEN $point = 'confirm' THEN s.minor_confirm ELSE s.minor_screen END, false) AS m,
           coalesce(CASE WHEN $point = 'confirm' THEN s.adult_sexual_confirm ELSE s.adult_sexual_screen END, false) AS a
    FROM removed_scanned AS s  -- the scanned rows of recommended items, with their cluster (removed_scanned.sql)
    SEMI JOIN removed AS r USING (item_id)
),
removed_grouped AS (
    SELECT 'source' AS group_kind, source AS group_id, m, a FROM removed_flags
    UNION ALL
    SELECT 'shard' AS group_kind, shard AS group_id, m, a FROM removed_flags
    UNION ALL
    SELECT 'cluster' AS group_kind, CAST(cluster AS VARCHAR) AS group_id, m, a FROM removed_flags WHERE cluster IS NOT NULL
),
removed_counts AS (
    SELECT group_kind,
           group_id,
           count(*) AS items,
           count(*) FILTER (WHERE m) AS minor,
           count(*) FILTER (WHERE a) AS adult_sexual,
           count(*) FILTER (WHERE m AND a) AS both_concepts
    FROM removed_grouped
    GROUP BY group_kind, group_id
),
kept_counts AS (
    SELECT b.group_kind,
           b.group_id,
           CAST(b.items - coalesce(r.items, 0) AS BIGINT) AS items,
           CAST(CASE WHEN $point = 'confirm' THEN b.minor_confirm ELSE b.minor_screen END
                - coalesce(r.minor, 0) AS BIGINT) AS minor,
           CAST(CASE WHEN $point = 'confirm' THEN b.adult_sexual_confirm ELSE b.adult_sexual_screen END
                - coalesce(r.adult_sexual, 0) AS BIGINT) AS adult_sexual,
           CAST(CASE WHEN $point = 'confirm' THEN b.both_confirm ELSE b.both_screen END
                - coalesce(r.both_concepts, 0) AS BIGINT) AS both_concepts
    FROM group_counts AS b
    LEFT JOIN removed_counts AS r ON r.group_kind = b.group_kind AND r.group_id IS NOT DISTINCT FROM b.group_id
),
kind_totals AS (
    -- the co-occurring items of each kind, over every group (ranked or not)
    SELECT group_kind, CAST(sum(both_concepts) AS BIGINT) AS kind_both
    FROM kept_counts
    GROUP BY group_kind
),
per_group AS (
    SELECT k.group_kind, k.group_id, k.items, k.minor, k.adult_sexual, k.both_concepts, t.kind_both
    FROM kept_counts AS k
    JOIN kind_totals AS t USING (group_kind)
    WHERE k.items > 0 AND k.items >= $min_items
),
rated AS (
    SELECT p.*,
           p.minor / p.items AS minor_rate,
           wilson_lo(p.minor, p.items) AS minor_rate_lo,
           wilson_hi(p.minor, p.items) AS minor_rate_hi,
           p.adult_sexual / p.items AS adult_sexual_rate,
           wilson_lo(p.adult_sexual, p.items) AS adult_sexual_rate_lo,
           wilson_hi(p.adult_sexual, p.items) AS adult_sexual_rate_hi,
           p.both_concepts / p.items AS both_rate,
           p.minor > 0 AND p.adult_sexual > 0 AS co_present
    FROM per_group AS p
),
scored AS (
    SELECT group_kind, group_id, items, minor, adult_sexual, both_concepts,
           minor_rate, minor_rate_lo, minor_rate_hi,
           adult_sexual_rate, adult_sexual_rate_lo, adult_sexual_rate_hi,
           both_rate, co_present,
           CASE WHEN kind_both > 0 THEN both_concepts / kind_both END AS cooccurrence_share,
           CASE WHEN kind_both = 0 THEN NULL WHEN both_concepts = 0 THEN 0.0
                ELSE wilson_lo(both_concepts, kind_both) END AS cooccurrence_share_lo,
           wilson_hi(both_concepts, kind_both) AS cooccurrence_share_hi,
           CASE WHEN co_present THEN sqrt(greatest(minor_rate_lo, 0) * greatest(adult_sexual_rate_lo, 0))
                ELSE 0.0 END AS score
    FROM rated
)
SELECT *,
       row_number() OVER (PARTITION BY group_kind
                          ORDER BY both_concepts DESC, score DESC, co_present DESC, items DESC, group_id) AS rank
FROM scored
ORDER BY group_kind, rank
