-- The scanned rows of every item that some strategy removes (ids in recommendations, any strategy), with the
-- columns the residual queries group and count them by. Builds the table removed_scanned, so that the residual
-- R2-R4 of each strategy (group_risk.sql, neighbourhood_risk.sql, dataset_risk.sql) reads these rows instead of
-- scanning every item once per strategy and query: a strategy's removed items are removed_scanned SEMI JOIN its
-- recommendations, exactly as they were scanned SEMI JOIN them. Rebuilt whenever recommendations is.
-- Parameters: none.
WITH recommended AS (
    SELECT DISTINCT item_id FROM recommendations
)
SELECT s.item_id,
       s.source,
       s.file,
       s.minor_screen,
       s.minor_confirm,
       s.adult_sexual_screen,
       s.adult_sexual_confirm
FROM scanned AS s
SEMI JOIN recommended AS r USING (item_id)
