-- Removals of every strategy, one row per (strategy, item). Builds the table recommendations.
--   r1_only                 mandatory: R1 items (both concepts at screen, or a hash match): quarantine
--   adult_in_minor_sources  R1 + adult_sexual (screen) items in sources where minors are present (screen)
--   all_adult_sexual        R1 + every adult_sexual (screen) item
-- Parameters: none.
WITH r1 AS (
    SELECT item_id, reasons FROM item_risk WHERE r1
),
minor_sources AS (
    SELECT source FROM scanned GROUP BY source HAVING count(*) FILTER (WHERE minor_screen) > 0
),
adult AS (
    SELECT s.item_id, s.source IN (SELECT source FROM minor_sources) AS in_minor_source
    FROM scanned AS s
    WHERE s.adult_sexual_screen AND s.item_id NOT IN (SELECT item_id FROM r1)
),
strategies AS (
    SELECT name FROM (VALUES ('r1_only'), ('adult_in_minor_sources'), ('all_adult_sexual')) AS t(name)
),
mandatory AS (
    SELECT st.name AS strategy, r1.item_id, 'quarantine' AS action, r1.reasons
    FROM r1 CROSS JOIN strategies AS st
),
optional AS (
    SELECT 'adult_in_minor_sources' AS strategy, item_id, 'remove' AS action, ['R3_SOURCE'] AS reasons
    FROM adult WHERE in_minor_source
    UNION ALL
    SELECT 'all_adult_sexual' AS strategy, item_id, 'remove' AS action,
           CASE WHEN in_minor_source THEN ['ADULT_SEXUAL', 'R3_SOURCE'] ELSE ['ADULT_SEXUAL'] END AS reasons
    FROM adult
)
SELECT strategy, item_id, action, reasons FROM mandatory
UNION ALL
SELECT strategy, item_id, action, reasons FROM optional
