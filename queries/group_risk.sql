-- R3 per group: source domain, shard (input file) and embedding cluster. Counts, rates with Wilson 95%
-- intervals, co-presence, lift of co-presence over the dataset with a 95% interval (log-ratio / delta
-- method, docs/risk-model.md), the R3 score, and the rank within each group kind (riskiest first).
-- The items removed by $strategy are left out first ('none' keeps everything), so the same query gives
-- the residual R3 after a removal strategy. Groups with fewer than $min_items items are not ranked.
-- Parameters: $strategy (a strategy name or 'none'), $point ('screen' or 'confirm'), $min_items.
WITH removed AS (
    SELECT DISTINCT item_id FROM recommendations WHERE strategy = $strategy
),
kept AS (
    SELECT s.* FROM scanned AS s ANTI JOIN removed AS r USING (item_id)
),
flags AS (
    SELECT k.item_id,
           k.source,
           coalesce(k.file, 'unknown') AS shard,
           c.cluster,
           coalesce(CASE WHEN $point = 'confirm' THEN k.minor_confirm ELSE k.minor_screen END, false) AS m,
           coalesce(CASE WHEN $point = 'confirm' THEN k.adult_sexual_confirm ELSE k.adult_sexual_screen END, false) AS a
    FROM kept AS k
    LEFT JOIN clusters AS c USING (item_id)
),
totals AS (
    SELECT count(*) AS n_all,
           count(*) FILTER (WHERE m) AS m_all,
           count(*) FILTER (WHERE a) AS a_all
    FROM flags
),
grouped AS (
    SELECT 'source' AS group_kind, source AS group_id, m, a FROM flags
    UNION ALL
    SELECT 'shard' AS group_kind, shard AS group_id, m, a FROM flags
    UNION ALL
    SELECT 'cluster' AS group_kind, CAST(cluster AS VARCHAR) AS group_id, m, a FROM flags WHERE cluster IS NOT NULL
),
per_group AS (
    SELECT group_kind,
           group_id,
           count(*) AS items,
           count(*) FILTER (WHERE m) AS minor,
           count(*) FILTER (WHERE a) AS adult_sexual,
           count(*) FILTER (WHERE m AND a) AS both_concepts
    FROM grouped
    GROUP BY group_kind, group_id
    HAVING count(*) >= $min_items
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
