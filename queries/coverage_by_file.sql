-- Coverage by input file (the shard an item came from: a parquet/CSV/JSONL file, a tar shard, or the media file
-- itself in a folder): items, assessed and not assessed, the assessed share and the not-assessed items per
-- reason; the $limit files with the most items not assessed (then the largest), and files_total, the number of
-- files with at least one item. Parameters: $limit (rows returned).
WITH per_file AS (
    SELECT coalesce(file, 'unknown') AS file,
           count(*) AS items,
           count(*) FILTER (WHERE assessed) AS assessed,
           count(*) FILTER (WHERE NOT assessed) AS not_assessed
    FROM items
    GROUP BY 1
),
top AS (
    SELECT *, count(*) OVER () AS files_total
    FROM per_file
    ORDER BY not_assessed DESC, items DESC, file
    LIMIT $limit
),
reasons AS (
    -- the reasons of the listed files only: one histogram per listed file, not one per file of the dataset
    SELECT coalesce(file, 'unknown') AS file, histogram(not_assessed) AS not_assessed_by_reason
    FROM items
    WHERE NOT assessed AND coalesce(file, 'unknown') IN (SELECT file FROM top)
    GROUP BY 1
)
SELECT t.file,
       t.items,
       t.assessed,
       t.not_assessed,
       t.assessed / t.items AS assessed_share,
       r.not_assessed_by_reason,
       t.files_total
FROM top AS t
LEFT JOIN reasons AS r USING (file)
ORDER BY t.not_assessed DESC, t.items DESC, t.file
