-- Concept prevalence among scanned items at both operating points, with Wilson 95% intervals.
-- Parameters: none.
WITH scanned_count AS (
    SELECT count(*) AS n FROM scanned
),
per_concept AS (
    SELECT concept,
           count(*) FILTER (WHERE screen) AS screen_items,
           count(*) FILTER (WHERE confirm) AS confirm_items
    FROM tags
    WHERE score IS NOT NULL
    GROUP BY concept
)
SELECT p.concept,
       s.n AS scanned,
       p.screen_items,
       p.screen_items / s.n AS screen_rate,
       wilson_lo(p.screen_items, s.n) AS screen_rate_lo,
       wilson_hi(p.screen_items, s.n) AS screen_rate_hi,
       p.confirm_items,
       p.confirm_items / s.n AS confirm_rate,
       wilson_lo(p.confirm_items, s.n) AS confirm_rate_lo,
       wilson_hi(p.confirm_items, s.n) AS confirm_rate_hi
FROM per_concept AS p
CROSS JOIN scanned_count AS s
ORDER BY p.concept
