-- Items for the escalation package (RUN/escalation/): every R1 item (both concepts, or a known-hash match) with
-- its source references. Captions and URLs of these items are never stored in the run: the tag stage kept only
-- the md5 of the normalised URL and its host (item_rows.url_md5 / url_host, not in the public views). The
-- references are those of the id's first occurrence. Parameters: none.
WITH r1 AS (
    SELECT item_id, hash_match, both_concepts FROM item_risk_flagged WHERE r1
),
refs AS (
    SELECT DISTINCT ON (item_id) item_id, url_md5, url_host, source
    FROM item_rows
    WHERE item_id IN (SELECT item_id FROM r1)
    ORDER BY item_id, row_idx
)
SELECT r.item_id,
       r.hash_match,
       r.both_concepts,
       i.url_md5,
       i.url_host,
       i.source
FROM r1 AS r
JOIN refs AS i USING (item_id)
ORDER BY r.item_id
