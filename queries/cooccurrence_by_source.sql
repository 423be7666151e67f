-- Co-occurrence of minor and adult_sexual per source domain, with Wilson 95% intervals, co-presence,
-- the source's share of the dataset's co-occurring items (items carrying both concepts) with a Wilson 95%
-- interval, and the R3 source score (docs/risk-model.md). Ranked as group_risk.sql ranks: co-occurring items
-- first, then the score.
-- Parameters: $point ('screen' or 'confirm'), $min_items (minimum items for a source to be ranked).
WITH flags AS (
    SELECT source,
           coalesce(CASE WHEN $point = 'confirm' THEN minor_confirm ELSE minor_screen END, false) AS m,
           coalesce(CASE WHEN $point = 'confirm' THEN adult_sexual_confirm ELSE adult_sexual_screen END, false) AS a
    FROM scanned
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
totals AS (
    SELECT CAST(sum(both_concepts) AS BIGINT) AS both_all FROM per_source
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
           CASE WHEN t.both_all > 0 THEN p.both_concepts / t.both_all END AS cooccurrence_share,
           CASE WHEN t.both_all = 0 THEN NULL WHEN p.both_concepts = 0 THEN 0.0
                ELSE wilson_lo(p.both_concepts, t.both_all) END AS cooccurrence_share_lo,
           wilson_hi(p.both_concepts, t.both_all) AS cooccurrence_share_hi
    FROM per_source AS p
    CROSS JOIN totals AS t
    WHERE p.items >= $min_items
)
SELECT *,
       sqrt(greatest(minor_rate_lo, 0) * greatest(adult_sexual_rate_lo, 0)) AS score
FROM rated
ORDER BY both_concepts DESC, score DESC, co_present DESC, items DESC, source
