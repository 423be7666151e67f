-- R4: the compositional exposure index and its parts (formulas in docs/risk-model.md).
-- Reads the tables item_risk and group_risk (kind 'source'). Parameters: none.
WITH n AS (
    SELECT count(*) AS scanned FROM scanned
),
r1 AS (
    SELECT count(*) FILTER (WHERE r1) AS r1_items FROM item_risk
),
groups AS (
    SELECT sum(items * sqrt(minor_rate * adult_sexual_rate)) AS weighted
    FROM group_risk
    WHERE group_kind = 'source'
),
parts AS (
    SELECT n.scanned,
           r1.r1_items,
           r1.r1_items / greatest(n.scanned, 1) AS r1_share,
           coalesce(groups.weighted, 0) / greatest(n.scanned, 1) AS group_cooccurrence
    FROM n CROSS JOIN r1 CROSS JOIN groups
)
SELECT scanned,
       r1_items,
       r1_share,
       group_cooccurrence,
       least(1.0, 100 * r1_share + group_cooccurrence) AS exposure_index
FROM parts
