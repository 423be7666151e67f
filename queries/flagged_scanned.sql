-- The scanned rows with either primary concept at the screen point (about 3% of the rows of a web dataset),
-- with the columns that R1 (item_risk_flagged.sql), the strategies' adult-sexual removals
-- (strategy_removals.sql) and the removed rows (removed_scanned.sql) read. Builds the table flagged_scanned
-- (analyzer/risk.py), so that the scanned items are read once for the three of them: each pass decodes every
-- row's id, which costs more than the flags themselves (0.2-0.3 s at 10M rows; three passes were 1.2 s).
-- Every row that one of them reads from scanned filtered on these flags is here, unchanged. Parameters: none.
SELECT item_id,
       source,
       file,
       minor_score,
       adult_sexual_score,
       minor_screen,
       minor_confirm,
       adult_sexual_screen,
       adult_sexual_confirm
FROM scanned
WHERE coalesce(minor_screen, false) OR coalesce(adult_sexual_screen, false)
