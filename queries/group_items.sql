-- Items of one group with their primary-concept flags (ids and scores only, never captions).
-- Parameters: $source (a source domain), $point ('screen' or 'confirm').
WITH g AS (
    SELECT item_id,
           minor_score,
           adult_sexual_score,
           CASE WHEN $point = 'confirm' THEN minor_confirm ELSE minor_screen END AS minor,
           CASE WHEN $point = 'confirm' THEN adult_sexual_confirm ELSE adult_sexual_screen END AS adult_sexual
    FROM scanned
    WHERE source = $source
)
SELECT * FROM g ORDER BY greatest(minor_score, adult_sexual_score) DESC, item_id
