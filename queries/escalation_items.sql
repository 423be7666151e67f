-- Items for the escalation package (RUN/escalation/): every R1 item (both concepts, or a known-hash
-- match) with its source references. Captions are never selected; the URL is hashed in Python and only
-- its md5 is written. The references are those of the id's first occurrence in items. Parameters: none.
WITH r1 AS (
    SELECT item_id, hash_match, both_concepts FROM item_risk_flagged WHERE r1
),
refs AS (
    SELECT DISTINCT ON (item_id) item_id, url, source
    FROM items
    WHERE item_id IN (SELECT item_id FROM r1)
    ORDER BY item_id, row_idx
)
SELECT r.item_id,
       r.hash_match,
       r.both_concepts,
       i.url,
       i.source
FROM r1 AS r
JOIN refs AS i USING (item_id)
ORDER BY r.item_id
