-- Coverage by reason: every item of the catalog (each input row or file is one item) counted once, as
-- 'assessed' or under the reason it was not assessed (analyzer/tagging/batch.py NOT_ASSESSED: failed, no_content,
-- unsupported_media, uncalibrated_modality, language_unsupported, no_media_encoder), with its share of all items.
-- 'assessed' first, then the reasons by size. Parameters: none.
WITH per_item AS (
    SELECT CASE WHEN assessed THEN 'assessed' ELSE coalesce(not_assessed, 'failed') END AS reason
    FROM items
),
total AS (
    SELECT count(*) AS n FROM items
)
SELECT p.reason,
       count(*) AS items,
       count(*) / max(t.n) AS share
FROM per_item AS p
CROSS JOIN total AS t
GROUP BY p.reason
ORDER BY p.reason <> 'assessed', items DESC, p.reason
