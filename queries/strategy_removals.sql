-- Removals of every strategy, one row per (strategy, item). Builds the table recommendations.
-- Every strategy quarantines the R1 items first (both concepts at screen, or a hash match; reasons R1/HASH),
-- then removes adult_sexual (screen) items only; children's items are never removed unless they are R1.
--   r1_only                 R1 only
--   adult_in_minor_sources  + adult_sexual items in sources where minors are present (R3_SOURCE)
--                           + adult-side R2 bridges (R2_BRIDGE: adult items whose neighbourhood is minor-heavy)
--   adult_in_minor_groups   + adult_sexual items in sources or embedding clusters where minors are present
--                           (R3_SOURCE, R3_CLUSTER) + adult-side R2 bridges
--   all_adult_sexual        + every adult_sexual item (ADULT_SEXUAL, with the codes above where they apply)
-- The strategies nest: each removes everything the one above it removes.
-- Reads item_risk_flagged, flagged_scanned (the scanned rows with a primary concept flagged, which holds
-- every adult_sexual row, with its cluster), group_counts (minor items per group), neighbourhood_risk.
-- Parameters: $min_minor (minor items, at screen,
-- that make a group one "where minors are present"; 1 = any).
WITH r1 AS (
    SELECT item_id, reasons FROM item_risk_flagged WHERE r1
),
minor_sources AS (
    SELECT group_id AS source FROM group_counts WHERE group_kind = 'source' AND minor_screen >= $min_minor
),
minor_clusters AS (
    SELECT CAST(group_id AS INTEGER) AS cluster
    FROM group_counts
    WHERE group_kind = 'cluster' AND minor_screen >= $min_minor
),
bridges AS (
    SELECT DISTINCT item_id FROM neighbourhood_risk WHERE bridge AND direction = 'adult_to_minor'
),
adult AS (
    SELECT s.item_id,
           s.source IN (SELECT source FROM minor_sources) AS in_minor_source,
           coalesce(s.cluster IN (SELECT cluster FROM minor_clusters), false) AS in_minor_cluster,
           b.item_id IS NOT NULL AS bridge
    FROM flagged_scanned AS s
    LEFT JOIN bridges AS b USING (item_id)
    WHERE coalesce(s.adult_sexual_screen, false)
      AND s.item_id NOT IN (SELECT item_id FROM r1)
),
strategies AS (
    SELECT name FROM (VALUES ('r1_only'), ('adult_in_minor_sources'), ('adult_in_minor_groups'),
                             ('all_adult_sexual')) AS t(name)
),
mandatory AS (
    SELECT st.name AS strategy, r1.item_id, 'quarantine' AS action, r1.reasons
    FROM r1 CROSS JOIN strategies AS st
),
optional AS (
    SELECT 'adult_in_minor_sources' AS strategy, item_id, 'remove' AS action,
           list_filter([CASE WHEN in_minor_source THEN 'R3_SOURCE' END, CASE WHEN bridge THEN 'R2_BRIDGE' END],
                       lambda x: x IS NOT NULL) AS reasons
    FROM adult WHERE in_minor_source OR bridge
    UNION ALL
    SELECT 'adult_in_minor_groups' AS strategy, item_id, 'remove' AS action,
           list_filter([CASE WHEN in_minor_source THEN 'R3_SOURCE' END, CASE WHEN in_minor_cluster THEN 'R3_CLUSTER' END,
                        CASE WHEN bridge THEN 'R2_BRIDGE' END], lambda x: x IS NOT NULL) AS reasons
    FROM adult WHERE in_minor_source OR in_minor_cluster OR bridge
    UNION ALL
    SELECT 'all_adult_sexual' AS strategy, item_id, 'remove' AS action,
           list_filter(['ADULT_SEXUAL', CASE WHEN in_minor_source THEN 'R3_SOURCE' END,
                        CASE WHEN in_minor_cluster THEN 'R3_CLUSTER' END, CASE WHEN bridge THEN 'R2_BRIDGE' END],
                       lambda x: x IS NOT NULL) AS reasons
    FROM adult
)
SELECT strategy, item_id, action, reasons FROM mandatory
UNION ALL
SELECT strategy, item_id, action, reasons FROM optional
