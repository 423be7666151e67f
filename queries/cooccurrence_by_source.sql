-- Co-occurrence of minor and adult_sexual per source domain, with Wilson 95% intervals, co-presence,
-- lift over the dataset-wide rates, and the R3 source score (docs/risk-model.md). Ranked riskiest first.
-- Parameters: $point ('screen' or 'confirm'), $min_items (minimum items for a source to be ranked).
WITH flags AS (
    SELECT source,
           CASE WHEN $point = 'confirm' THEN minor_confirm ELSE minor_screen END AS m,
           CASE WHEN $point = 'confirm' THEN adult_sexual_confirm ELSE adult_sexual_screen END AS a
    FROM scanned
),
totals AS (
    SELECT count(*) AS n_all,
           count(*) FILTER (WHERE m) AS m_all,
           count(*) FILTER (WHERE a) AS a_all
    FROM flags
),
per_source AS (
    SELECT source,
           count(*) AS items,
           count(*) FILTER (WHERE m) AS minor,
           count(*) FILTER (WHERE a) AS adult_sexual,
           count(*) FILTER (WHERE m AND a) AS both_concepts
    FROM flags
    GROUP BY source
),
rated AS (
    SELECT p.*,
           p.minor / p.items AS minor_rate,
           wilson_lo(p.minor, p.items) AS minor_rate_lo,
           wilson_hi(p.minor, p.items) AS minor_rate_hi,
           p.adult_sexual / p.items AS adult_sexual_rate,
           wilson_lo(p.adult_sexual, p.items) AS adult_sexual_rate_lo,
           wilson_hi(p.adult_sexual, p.items) AS adult_sexual_rate_hi,
           p.minor > 0 AND p.adult_sexual > 0 AS co_present,
           (p.minor / p.items) * (p.adult_sexual / p.items)
               / nullif((t.m_all / t.n_all) * (t.a_all / t.n_all), 0) AS lift
    FROM per_source AS p
    CROSS JOIN totals AS t
    WHERE p.items >= $min_items
)
SELECT *,
       sqrt(greatest(minor_rate_lo, 0) * greatest(adult_sexual_rate_lo, 0)) AS score
FROM rated
ORDER BY score DESC, co_present DESC, items DESC, source
