-- Which of the given strings ($values) are the caption or the URL of a flagged item (R1, adult_sexual at the
-- screen point, or hash-matched)? Used to redact query results by value, so that a renamed or copied caption
-- column is redacted like `text` itself. Returns (value, kind) with kind 'text' or 'url'.
WITH flagged AS (
    SELECT item_id FROM item_scores WHERE coalesce(adult_sexual_screen, false)
    UNION SELECT item_id FROM item_risk_flagged WHERE r1
    UNION SELECT item_id FROM hash_matches
),
vals AS (
    SELECT DISTINCT unnest($values::VARCHAR[]) AS v
),
flagged_items AS (
    SELECT i.text, i.url FROM items i JOIN flagged f USING (item_id)
),
text_hits AS (
    SELECT vals.v AS value, 'text' AS kind FROM vals JOIN flagged_items fi ON fi.text = vals.v
),
url_hits AS (
    SELECT vals.v AS value, 'url' AS kind FROM vals JOIN flagged_items fi ON fi.url = vals.v
)
SELECT DISTINCT value, kind FROM text_hits
UNION
SELECT DISTINCT value, kind FROM url_hits
