-- R3 per group: source domain, shard (input file) and embedding cluster. Counts, rates with Wilson 95%
-- intervals, co-presence, lift of co-presence over the dataset with a 95% interval (log-ratio / delta
-- method, docs/risk-model.md), the R3 score, and the rank within each group kind (riskiest first).
-- The items removed by $strategy are left out first ('none' keeps everything), so the same query gives
-- the residual R3 after a removal strategy: the counts of the scanned dataset (table group_counts,
-- queries/group_counts.sql) minus those of the removed items, so only the removed items are read.
-- Groups with fewer than $min_items items are not ranked.
-- Parameters: $strategy (a strategy name or 'none'), $point ('screen' or 'confirm'), $min_items.
WITH removed AS (
    SELECT DISTINCT item_id FROM recommendations WHERE strategy = $strategy
),
removed_flags AS (
    SELECT s.source,
           coalesce(s.file, 'unknown') AS shard,
           s.cluster,
           coalesce(CASE WHEN $point = 'confirm' THEN s.minor_confirm ELSE s.minor_screen END, false) AS m,
           coalesce(CASE WHEN $point = 'confirm' THEN s.adult_sexual_confirm ELSE s.adult_sexual_screen END, false) AS a
    FROM removed_scanned AS s  -- the scanned rows of recommended items, with their cluster (removed_scanned.sql)
    SEMI JOIN removed AS r USING (item_id)
),
removed_grouped AS (
    SELECT 'source' AS group_kind, source AS group_id, m, a FROM removed_flags
    UNION ALL
    SELECT 'shard' AS group_kind, shard AS group_id, m, a FROM removed_flags
    UNION ALL
    SELECT 'cluster' AS group_kind, CAST(cluster AS VARCHAR) AS group_id, m, a FROM removed_flags WHERE cluster IS NOT NULL
),
removed_counts AS (
    SELECT group_kind,
           group_id,
           count(*) AS items,
           count(*) FILTER (WHERE m) AS minor,
           count(*) FILTER (WHERE a) AS adult_sexual,
           count(*) FILTER (WHERE m AND a) AS both_concepts
    FROM removed_grouped
    GROUP BY group_kind, group_id
),
kept_counts AS (
    SELECT b.group_kind,
           b.group_id,
           CAST(b.items - coalesce(r.items, 0) AS BIGINT) AS items,
           CAST(CASE WHEN $point = 'confirm' THEN b.minor_confirm ELSE b.minor_screen END
                - coalesce(r.minor, 0) AS BIGINT) AS minor,
           CAST(CASE WHEN $point = 'confirm' THEN b.adult_sexual_confirm ELSE b.adult_sexual_screen END
                - coalesce(r.adult_sexual, 0) AS BIGINT) AS adult_sexual,
           CAST(CASE WHEN $point = 'confirm' THEN b.both_confirm ELSE b.both_screen END
                - coalesce(r.both_concepts, 0) AS BIGINT) AS both_concepts
    FROM group_counts AS b
    LEFT JOIN removed_counts AS r ON r.group_kind = b.group_kind AND r.group_id IS NOT DISTINCT FROM b.group_id
),
totals AS (
    SELECT CAST(coalesce(sum(items), 0) AS BIGINT) AS n_all,
           CAST(coalesce(sum(minor), 0) AS BIGINT) AS m_all,
           CAST(coalesce(sum(adult_sexual), 0) AS BIGINT) AS a_all
    FROM kept_counts
    WHERE group_kind = 'source'
),
per_group AS (
    SELECT group_kind, group_id, items, minor, adult_sexual, both_concepts
    FROM kept_counts
    WHERE items > 0 AND items >= $min_items
),
rated AS (
    SELECT p.*,
           p.minor / p.items AS minor_rate,
           wilson_lo(p.minor, p.items) AS minor_rate_lo,
           wilson_hi(p.minor, p.items) AS minor_rate_hi,
           p.adult_sexual / p.items AS adult_sexual_rate,
           wilson_lo(p.adult_sexual, p.items) AS adult_sexual_rate_lo,
           wilson_hi(p.adult_sexual, p.items) AS adult_sexual_rate_hi,
           p.both_concepts / p.items AS both_rate,
           p.minor > 0 AND p.adult_sexual > 0 AS co_present,
           t.n_all, t.m_all, t.a_all
    FROM per_group AS p
    CROSS JOIN totals AS t
),
lifted AS (
    SELECT *,
           CASE WHEN m_all = 0 OR a_all = 0 THEN NULL
                ELSE minor_rate * adult_sexual_rate / ((m_all / n_all) * (a_all / n_all)) END AS lift,
           -- log lift with 0.5 added to zero counts (Haldane), and its standard error (delta method)
           CASE WHEN m_all = 0 OR a_all = 0 THEN NULL
                ELSE ln(greatest(minor, 0.5) / items) + ln(greatest(adult_sexual, 0.5) / items)
                     - ln(m_all / n_all) - ln(a_all / n_all) END AS log_lift_cc,
           CASE WHEN m_all = 0 OR a_all = 0 THEN NULL
                ELSE sqrt((1 - minor_rate) / greatest(minor, 0.5) + (1 - adult_sexual_rate) / greatest(adult_sexual, 0.5)
                          + (1 - m_all / n_all) / m_all + (1 - a_all / n_all) / a_all) END AS log_lift_se
    FROM rated
),
scored AS (
    SELECT group_kind, group_id, items, minor, adult_sexual, both_concepts,
           minor_rate, minor_rate_lo, minor_rate_hi,
           adult_sexual_rate, adult_sexual_rate_lo, adult_sexual_rate_hi,
           both_rate, co_present,
           lift,
           CASE WHEN NOT co_present THEN 0.0 ELSE exp(log_lift_cc - 1.96 * log_lift_se) END AS lift_lo,
           exp(log_lift_cc + 1.96 * log_lift_se) AS lift_hi,
           CASE WHEN co_present THEN sqrt(greatest(minor_rate_lo, 0) * greatest(adult_sexual_rate_lo, 0))
                ELSE 0.0 END AS score
    FROM lifted
)
SELECT *,
       row_number() OVER (PARTITION BY group_kind ORDER BY score DESC, co_present DESC, items DESC, group_id) AS rank
FROM scored
ORDER BY group_kind, rank
