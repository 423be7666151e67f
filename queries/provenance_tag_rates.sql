-- Tag rates (screen point) among the scanned items of each provenance group, with Wilson 95% intervals: input
-- punsafe at or above $high and below it, pwatermark at or above $high and below it, C2PA manifests that declare a
-- trained-model (AI) source and those that do not. Groups without items are left out. No labels say how far the
-- input's own columns can be trusted: the rates are set side by side, never fused.
-- Parameters: $high (probability threshold, e.g. 0.5).
WITH s AS (
    SELECT i.punsafe, i.pwatermark, i.c2pa_ai_generated, sc.minor_screen, sc.adult_sexual_screen
    FROM scanned AS sc
    JOIN items AS i USING (row_idx)
),
grouped AS (
    SELECT 1 AS ord, 'punsafe >= high' AS evidence, minor_screen, adult_sexual_screen FROM s WHERE punsafe >= $high
    UNION ALL SELECT 2, 'punsafe < high', minor_screen, adult_sexual_screen FROM s WHERE punsafe < $high
    UNION ALL SELECT 3, 'pwatermark >= high', minor_screen, adult_sexual_screen FROM s WHERE pwatermark >= $high
    UNION ALL SELECT 4, 'pwatermark < high', minor_screen, adult_sexual_screen FROM s WHERE pwatermark < $high
    UNION ALL SELECT 5, 'c2pa ai-generated', minor_screen, adult_sexual_screen FROM s WHERE c2pa_ai_generated
    UNION ALL SELECT 6, 'c2pa other', minor_screen, adult_sexual_screen FROM s WHERE NOT c2pa_ai_generated
),
counted AS (
    SELECT ord, evidence, count(*) AS scanned,
           count(*) FILTER (WHERE minor_screen) AS minor,
           count(*) FILTER (WHERE adult_sexual_screen) AS adult_sexual
    FROM grouped
    GROUP BY ord, evidence
)
SELECT evidence, scanned,
       minor, minor / scanned AS minor_rate, wilson_lo(minor, scanned) AS minor_rate_lo,
       wilson_hi(minor, scanned) AS minor_rate_hi,
       adult_sexual, adult_sexual / scanned AS adult_sexual_rate, wilson_lo(adult_sexual, scanned) AS adult_sexual_rate_lo,
       wilson_hi(adult_sexual, scanned) AS adult_sexual_rate_hi
FROM counted
ORDER BY ord
