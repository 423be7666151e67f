-- Counts per group of the scanned dataset (nothing removed), at both operating points: the base that
-- group_risk.sql, neighbourhood_risk.sql, dataset_risk.sql and strategy_removals.sql start from, so that
-- the residual risk of a removal strategy only has to look at the removed items. Builds the table
-- group_counts (analyzer/risk.py, after the index stage and flagged_scanned). Three group kinds: source domain
-- and shard (input file), one pass over scanned with grouping sets (every scanned item is in exactly one source
-- group, so the source rows sum to the dataset totals), and embedding cluster: the items of each cluster counted
-- in the clusters table, its flagged items in flagged_scanned (queries/flagged_scanned.sql, which carries each
-- flagged item's cluster), so that no query joins the two dataset-sized tables scanned and clusters by id (3 s
-- at 10M rows). The clusters table holds scanned items only (the index stage reads the embedding parts, written
-- for rows that scanned ok, and keeps the first row of a duplicated id only where the catalog scanned it).
-- Items without a cluster are left out of the cluster kind. Parameters: none.
WITH flags AS (
    SELECT source,
           coalesce(file, 'unknown') AS shard,
           coalesce(minor_screen, false) AS m_screen,
           coalesce(adult_sexual_screen, false) AS a_screen,
           coalesce(minor_confirm, false) AS m_confirm,
           coalesce(adult_sexual_confirm, false) AS a_confirm
    FROM scanned
),
counted AS (
    SELECT grouping(source, shard) AS g,
           source,
           shard,
           count(*) AS items,
           count(*) FILTER (WHERE m_screen) AS minor_screen,
           count(*) FILTER (WHERE a_screen) AS adult_sexual_screen,
           count(*) FILTER (WHERE m_screen AND a_screen) AS both_screen,
           count(*) FILTER (WHERE m_confirm) AS minor_confirm,
           count(*) FILTER (WHERE a_confirm) AS adult_sexual_confirm,
           count(*) FILTER (WHERE m_confirm AND a_confirm) AS both_confirm
    FROM flags
    GROUP BY GROUPING SETS ((source), (shard))
),
cluster_items AS (
    SELECT cluster, count(*) AS items FROM clusters GROUP BY cluster
),
cluster_flags AS (
    SELECT cluster,
           count(*) FILTER (WHERE coalesce(minor_screen, false)) AS minor_screen,
           count(*) FILTER (WHERE coalesce(adult_sexual_screen, false)) AS adult_sexual_screen,
           count(*) FILTER (WHERE coalesce(minor_screen AND adult_sexual_screen, false)) AS both_screen,
           count(*) FILTER (WHERE coalesce(minor_confirm, false)) AS minor_confirm,
           count(*) FILTER (WHERE coalesce(adult_sexual_confirm, false)) AS adult_sexual_confirm,
           count(*) FILTER (WHERE coalesce(minor_confirm AND adult_sexual_confirm, false)) AS both_confirm
    FROM flagged_scanned
    WHERE cluster IS NOT NULL
    GROUP BY cluster
)
SELECT CASE g WHEN 1 THEN 'source' ELSE 'shard' END AS group_kind,
       CASE g WHEN 1 THEN source ELSE shard END AS group_id,
       items, minor_screen, adult_sexual_screen, both_screen, minor_confirm, adult_sexual_confirm, both_confirm
FROM counted
UNION ALL
SELECT 'cluster' AS group_kind,
       CAST(i.cluster AS VARCHAR) AS group_id,
       i.items,
       coalesce(f.minor_screen, 0) AS minor_screen,
       coalesce(f.adult_sexual_screen, 0) AS adult_sexual_screen,
       coalesce(f.both_screen, 0) AS both_screen,
       coalesce(f.minor_confirm, 0) AS minor_confirm,
       coalesce(f.adult_sexual_confirm, 0) AS adult_sexual_confirm,
       coalesce(f.both_confirm, 0) AS both_confirm
FROM cluster_items AS i
LEFT JOIN cluster_flags AS f USING (cluster)
