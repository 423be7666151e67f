-- The scanned rows of every item that some strategy removes (ids in recommendations, any strategy), with the
-- columns the residual queries group and count them by, and the item's embedding cluster (NULL without one).
-- Builds the table removed_scanned, so that the residual R2-R4 of each strategy (group_risk.sql,
-- neighbourhood_risk.sql, dataset_risk.sql) reads these rows instead of scanning every item, or joining the
-- dataset-sized clusters table, once per strategy and query: a strategy's removed items are removed_scanned SEMI
-- JOIN its recommendations, exactly as they were scanned SEMI JOIN them. Rebuilt whenever recommendations is.
-- The rows come from flagged_scanned (queries/flagged_scanned.sql, a few percent of the rows, with their cluster)
-- for the items it holds, which are every item the strategies remove today, and from scanned and clusters for
-- any other (a semi join on a handful of ids, or none, which DuckDB turns into a filter of the scan: no full pass).
-- Parameters: none.
WITH recommended AS (
    SELECT DISTINCT item_id FROM recommendations
),
elsewhere AS (
    SELECT item_id FROM recommended ANTI JOIN flagged_scanned USING (item_id)
)
SELECT f.item_id,
       f.source,
       f.file,
       f.minor_screen,
       f.minor_confirm,
       f.adult_sexual_screen,
       f.adult_sexual_confirm,
       f.cluster
FROM flagged_scanned AS f
SEMI JOIN recommended AS r USING (item_id)
UNION ALL
SELECT s.item_id,
       s.source,
       s.file,
       s.minor_screen,
       s.minor_confirm,
       s.adult_sexual_screen,
       s.adult_sexual_confirm,
       c.cluster
FROM scanned AS s
SEMI JOIN elsewhere AS e USING (item_id)
LEFT JOIN clusters AS c USING (item_id)
