-- Coverage by source domain: items, assessed and not assessed per source, the assessed share and the
-- not-assessed items per reason; the $limit sources with the most items not assessed (then the largest), and
-- sources_total, the number of sources in the catalog. Parameters: $limit (rows returned).
WITH per_source AS (
    SELECT coalesce(source, 'unknown') AS source,
           count(*) AS items,
           count(*) FILTER (WHERE assessed) AS assessed,
           count(*) FILTER (WHERE NOT assessed) AS not_assessed
    FROM items
    GROUP BY 1
),
top AS (
    SELECT *, count(*) OVER () AS sources_total
    FROM per_source
    ORDER BY not_assessed DESC, items DESC, source
    LIMIT $limit
),
reasons AS (
    -- the reasons of the listed sources only: one histogram per listed source, not one per source of the dataset
    SELECT coalesce(source, 'unknown') AS source, histogram(not_assessed) AS not_assessed_by_reason
    FROM items
    WHERE NOT assessed AND coalesce(source, 'unknown') IN (SELECT source FROM top)
    GROUP BY 1
)
SELECT t.source,
       t.items,
       t.assessed,
       t.not_assessed,
       t.assessed / t.items AS assessed_share,
       r.not_assessed_by_reason,
       t.sources_total
FROM top AS t
LEFT JOIN reasons AS r USING (source)
ORDER BY t.not_assessed DESC, t.items DESC, t.source
