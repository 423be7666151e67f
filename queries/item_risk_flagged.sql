-- R1 per item: both primary concepts at the screen point, or a known-hash match (also for items that
-- failed to scan, e.g. an image that could not be decoded). Builds the table item_risk_flagged: the R1 and
-- hash-matched items, one row each, which the other queries read (built by analyzer/risk.py). The view
-- item_risk (queries/item_risk.sql) adds every other scanned item to these rows.
-- The rows with both concepts at screen come from flagged_scanned (queries/flagged_scanned.sql: the scanned rows
-- with either concept at screen, read once for this query and the strategies); hash-matched rows without both
-- are looked up in scanned by id (DuckDB pushes a few ids into the scan as a filter; no matches, no pass).
-- A scanned row is its id's first occurrence (later duplicates are error rows), so its own source and
-- scores are the item's; only hash-matched items that did not scan are looked up in items (first
-- occurrence of the id) and item_scores. Parameters: none.
WITH hash_hits AS (
    SELECT item_id, list(DISTINCT list_name ORDER BY list_name) AS hash_lists
    FROM hash_matches
    GROUP BY item_id
),
scanned_hits AS (
    SELECT item_id, source, minor_score, adult_sexual_score, true AS both_concepts
    FROM flagged_scanned
    WHERE minor_screen AND adult_sexual_screen
    UNION ALL
    SELECT s.item_id, s.source, s.minor_score, s.adult_sexual_score,
           coalesce(s.minor_screen AND s.adult_sexual_screen, false) AS both_concepts
    FROM scanned AS s
    SEMI JOIN hash_hits AS h USING (item_id)
    WHERE NOT coalesce(s.minor_screen AND s.adult_sexual_screen, false)
),
unscanned_hits AS (
    SELECT h.item_id FROM hash_hits AS h ANTI JOIN scanned AS s USING (item_id)
),
unscanned_flags AS (
    SELECT u.item_id,
           i.source,
           s.minor_score,
           s.adult_sexual_score,
           coalesce(s.minor_screen AND s.adult_sexual_screen, false) AS both_concepts
    FROM unscanned_hits AS u
    JOIN (SELECT DISTINCT ON (item_id) item_id, source FROM items
          WHERE item_id IN (SELECT item_id FROM unscanned_hits) ORDER BY item_id, row_idx) AS i USING (item_id)
    LEFT JOIN item_scores AS s USING (item_id)
),
flags AS (
    SELECT f.*, h.item_id IS NOT NULL AS hash_match, h.hash_lists
    FROM (SELECT * FROM scanned_hits UNION ALL SELECT * FROM unscanned_flags) AS f
    LEFT JOIN hash_hits AS h USING (item_id)
)
SELECT item_id,
       source,
       minor_score,
       adult_sexual_score,
       both_concepts,
       hash_match,
       hash_lists,
       both_concepts OR hash_match AS r1,
       list_filter([CASE WHEN both_concepts THEN 'R1' END, CASE WHEN hash_match THEN 'HASH' END],
                   lambda x: x IS NOT NULL) AS reasons
FROM flags
