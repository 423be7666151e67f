-- The scanned rows with either primary concept at the screen or the confirm point (about 3% of the rows of a web
-- dataset), with their embedding cluster, and the columns that R1 (item_risk_flagged.sql), the strategies'
-- adult-sexual removals (strategy_removals.sql), the removed rows (removed_scanned.sql), the R2 neighbourhoods
-- (neighbourhood_risk.sql) and the per-cluster flag counts (group_counts.sql) read. Builds the table
-- flagged_scanned (analyzer/risk.py, after the index stage wrote clusters), so that the scanned items are read
-- once for all of them, and joined to the dataset-sized clusters table once: each pass decodes every row's id,
-- which costs more than the flags themselves (0.2-0.3 s at 10M rows per pass; a join of two 10M-row tables by
-- id, 3 s). Every row that one of them reads from scanned filtered on these flags is here, unchanged (a row
-- flagged at confirm is flagged at screen too wherever the confirm threshold is the higher one, as calibration
-- makes it; the confirm test keeps the counts exact otherwise). cluster is NULL without embeddings.
-- Parameters: none.
SELECT s.item_id,
       s.source,
       s.file,
       s.minor_score,
       s.adult_sexual_score,
       s.minor_screen,
       s.minor_confirm,
       s.adult_sexual_screen,
       s.adult_sexual_confirm,
       c.cluster
FROM scanned AS s
LEFT JOIN clusters AS c USING (item_id)
WHERE coalesce(s.minor_screen, false) OR coalesce(s.adult_sexual_screen, false)
   OR coalesce(s.minor_confirm, false) OR coalesce(s.adult_sexual_confirm, false)
