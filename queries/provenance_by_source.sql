-- Provenance evidence per source, with an 'ALL' row first: how many items carry the input's own NSFW probability
-- (LAION punsafe) and watermark probability (pwatermark) and how many are at or above $high, how many carry a C2PA
-- manifest, how many of those verify (Valid or Trusted) and how many declare a trained-model (AI) source. Evidence
-- is reported beside the tags, never fused into them (analyzer/ingest/provenance.py). Largest sources first.
-- Parameters: $high (probability threshold, e.g. 0.5), $top (sources listed).
WITH per_source AS (
    SELECT source,
           count(*) AS items,
           count(punsafe) AS punsafe_items,
           count(*) FILTER (WHERE punsafe >= $high) AS punsafe_high,
           count(pwatermark) AS pwatermark_items,
           count(*) FILTER (WHERE pwatermark >= $high) AS pwatermark_high,
           count(*) FILTER (WHERE c2pa_state IN ('Valid', 'Trusted', 'Invalid', 'unreadable')) AS c2pa_manifests,
           count(*) FILTER (WHERE c2pa_state IN ('Valid', 'Trusted')) AS c2pa_verified,
           count(*) FILTER (WHERE c2pa_ai_generated) AS c2pa_ai_generated
    FROM items
    GROUP BY source
),
everything AS (
    SELECT 'ALL' AS source, sum(items) AS items, sum(punsafe_items) AS punsafe_items, sum(punsafe_high) AS punsafe_high,
           sum(pwatermark_items) AS pwatermark_items, sum(pwatermark_high) AS pwatermark_high,
           sum(c2pa_manifests) AS c2pa_manifests, sum(c2pa_verified) AS c2pa_verified,
           sum(c2pa_ai_generated) AS c2pa_ai_generated, 0 AS ord
    FROM per_source
),
listed AS (
    SELECT *, 1 AS ord FROM per_source ORDER BY items DESC, source LIMIT $top
)
SELECT source, items, punsafe_items, punsafe_high, punsafe_high / nullif(punsafe_items, 0) AS punsafe_high_share,
       pwatermark_items, pwatermark_high, pwatermark_high / nullif(pwatermark_items, 0) AS pwatermark_high_share,
       c2pa_manifests, c2pa_verified, c2pa_ai_generated, c2pa_ai_generated / items AS ai_generated_share
FROM (SELECT * FROM everything UNION ALL SELECT * FROM listed)
ORDER BY ord, items DESC, source
