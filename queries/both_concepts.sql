-- Items carrying both primary concepts (minor and adult_sexual) at an operating point: R1 candidates.
-- Ids, sources and scores only: captions are never returned.
-- Parameters: $point ('screen' or 'confirm').
WITH flagged AS (
    SELECT item_id,
           source,
           minor_score,
           adult_sexual_score,
           CASE WHEN $point = 'confirm' THEN minor_confirm AND adult_sexual_confirm
                ELSE minor_screen AND adult_sexual_screen END AS carries_both
    FROM scanned
)
SELECT item_id, source, minor_score, adult_sexual_score
FROM flagged
WHERE carries_both
ORDER BY least(minor_score, adult_sexual_score) DESC, item_id
