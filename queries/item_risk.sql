-- R1 per item, every item: defines the view item_risk, one row per scanned item and per hash-matched item.
-- Its R1 and hash-matched rows are the table item_risk_flagged (queries/item_risk_flagged.sql, which holds
-- the rule); every other scanned item is neither: both_concepts, hash_match and r1 false, no hash lists, no
-- reasons. Parameters: none.
SELECT * FROM item_risk_flagged
UNION ALL
SELECT s.item_id,
       s.source,
       s.minor_score,
       s.adult_sexual_score,
       false AS both_concepts,
       false AS hash_match,
       CAST(NULL AS VARCHAR[]) AS hash_lists,
       false AS r1,
       CAST([] AS VARCHAR[]) AS reasons
FROM scanned AS s
ANTI JOIN item_risk_flagged AS f USING (item_id)
