-- Coverage by modality: items, assessed and not assessed per modality (text, image, video, audio; 'unsupported'
-- for files of a media type no reader assesses, 'unknown' for rows that failed before their modality was known),
-- the assessed share and the not-assessed items per reason. Largest first. Parameters: none.
WITH per_item AS (
    SELECT CASE WHEN not_assessed = 'unsupported_media' THEN 'unsupported'
                WHEN status <> 'ok' AND coalesce(modality, 'text') = 'text' THEN 'unknown'
                ELSE coalesce(modality, 'unknown') END AS modality,
           assessed,
           not_assessed
    FROM items
)
SELECT modality,
       count(*) AS items,
       count(*) FILTER (WHERE assessed) AS assessed,
       count(*) FILTER (WHERE NOT assessed) AS not_assessed,
       count(*) FILTER (WHERE assessed) / count(*) AS assessed_share,
       histogram(not_assessed) FILTER (WHERE NOT assessed) AS not_assessed_by_reason
FROM per_item
GROUP BY modality
ORDER BY items DESC, modality
