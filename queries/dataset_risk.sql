-- R4: the compositional exposure index and its parts, for the dataset left after $strategy's removals
-- ('none' = the dataset as scanned). Formulas and a worked example: docs/risk-model.md.
--   r1_share            R1 items (both concepts at screen, or a hash match) / scanned items
--   group_cooccurrence  max over group kinds source and cluster of
--                       sum_g items_g * sqrt(minor_rate_g * adult_sexual_rate_g) / scanned
--   bridge_share        R2 bridge items (either direction) / scanned items (divided by the query sample
--                       rate when R2 was computed for a sample of the flagged items)
--   exposure_index      min(1, 100 * r1_share + group_cooccurrence + 10 * bridge_share)
-- Reads item_risk_flagged, recommendations, removed_scanned, group_counts, group_risk_by_strategy and
-- neighbourhood_risk_by_strategy.
-- Parameters: $strategy.
WITH removed AS (
    SELECT DISTINCT item_id FROM recommendations WHERE strategy = $strategy
),
n AS (
    -- scanned items (the source groups of group_counts sum to them) minus the removed ones
    SELECT CAST((SELECT coalesce(sum(items), 0) FROM group_counts WHERE group_kind = 'source')
                - (SELECT count(*) FROM removed_scanned SEMI JOIN removed USING (item_id)) AS BIGINT) AS scanned
),
r1 AS (
    SELECT count(*) FILTER (WHERE r1) AS r1_items,
           count(*) FILTER (WHERE hash_match) AS hash_items
    FROM (SELECT item_id, r1, hash_match FROM item_risk_flagged) ANTI JOIN removed USING (item_id)
),
groups AS (
    SELECT sum(items * sqrt(minor_rate * adult_sexual_rate)) FILTER (WHERE group_kind = 'source') AS source_weighted,
           sum(items * sqrt(minor_rate * adult_sexual_rate)) FILTER (WHERE group_kind = 'cluster') AS cluster_weighted,
           max(score) FILTER (WHERE group_kind = 'source') AS r3_max_source,
           max(score) FILTER (WHERE group_kind = 'shard') AS r3_max_shard,
           max(score) FILTER (WHERE group_kind = 'cluster') AS r3_max_cluster,
           count(*) FILTER (WHERE co_present AND group_kind = 'source') AS co_present_sources,
           count(*) FILTER (WHERE co_present AND group_kind = 'cluster') AS co_present_clusters
    FROM group_risk_by_strategy
    WHERE strategy = $strategy
),
bridges AS (
    SELECT count(DISTINCT item_id) FILTER (WHERE bridge) AS r2_bridges,
           count(*) FILTER (WHERE bridge AND direction = 'adult_to_minor') AS adult_bridges,
           count(*) FILTER (WHERE bridge AND direction = 'minor_to_adult') AS minor_bridges,
           count(DISTINCT item_id) AS r2_items
    FROM neighbourhood_risk_by_strategy
    WHERE strategy = $strategy
),
index_state AS (
    -- when R2 was computed for a sample of the flagged items (index budgets), bridges are scaled up by it
    SELECT EXISTS (SELECT 1 FROM clusters) AS r2_available,
           coalesce((SELECT CAST(json_extract_string(value, '$.query_sample_rate') AS DOUBLE) FROM runs
                     WHERE key = 'index_info'), 1.0) AS query_sample_rate
),
parts AS (
    SELECT n.scanned,
           r1.r1_items,
           r1.hash_items,
           r1.r1_items / greatest(n.scanned, 1) AS r1_share,
           coalesce(groups.source_weighted, 0) / greatest(n.scanned, 1) AS source_cooccurrence,
           coalesce(groups.cluster_weighted, 0) / greatest(n.scanned, 1) AS cluster_cooccurrence,
           coalesce(groups.r3_max_source, 0) AS r3_max_source,
           coalesce(groups.r3_max_shard, 0) AS r3_max_shard,
           coalesce(groups.r3_max_cluster, 0) AS r3_max_cluster,
           groups.co_present_sources,
           groups.co_present_clusters,
           index_state.r2_available,
           bridges.r2_items,
           bridges.r2_bridges,
           bridges.adult_bridges,
           bridges.minor_bridges,
           index_state.query_sample_rate,
           bridges.r2_bridges / index_state.query_sample_rate / greatest(n.scanned, 1) AS bridge_share
    FROM n CROSS JOIN r1 CROSS JOIN groups CROSS JOIN bridges CROSS JOIN index_state
)
SELECT CAST($strategy AS VARCHAR) AS strategy,
       *,
       greatest(source_cooccurrence, cluster_cooccurrence) AS group_cooccurrence,
       least(1.0, 100 * r1_share + greatest(source_cooccurrence, cluster_cooccurrence) + 10 * bridge_share)
           AS exposure_index
FROM parts
