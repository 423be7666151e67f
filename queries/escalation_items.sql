-- Items for the escalation package (RUN/escalation/): every R1 item (both concepts, or a known-hash
-- match) with its source references. Captions are never selected; the URL is hashed in Python and only
-- its md5 is written. Parameters: none.
SELECT r.item_id,
       r.hash_match,
       r.both_concepts,
       i.url,
       i.source
FROM item_risk AS r
JOIN (SELECT DISTINCT ON (item_id) item_id, url, source FROM items ORDER BY item_id, row_idx) AS i USING (item_id)
WHERE r.r1
ORDER BY r.item_id
