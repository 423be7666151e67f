-- Caption languages: items, scanned, assessed and not assessed (with the language-unsupported share), and the minor
-- and adult_sexual tag rates at both operating points among the scanned items of each language, with Wilson 95%
-- intervals. The language is the caption's (analyzer/concepts/language.py: a language code, 'und' when it cannot be
-- told, 'zxx' when there is nothing to read); items without a caption count under 'none'. Largest first.
-- Parameters: none.
WITH per_item AS (
    SELECT coalesce(lang, 'none') AS lang, status = 'ok' AS ok, assessed, not_assessed
    FROM items
),
coverage AS (
    SELECT lang,
           count(*) AS items,
           count(*) FILTER (WHERE ok) AS scanned,
           count(*) FILTER (WHERE assessed) AS assessed,
           count(*) FILTER (WHERE NOT assessed) AS not_assessed,
           count(*) FILTER (WHERE not_assessed = 'language_unsupported') AS language_unsupported
    FROM per_item
    GROUP BY lang
),
tagged AS (
    SELECT coalesce(lang, 'none') AS lang,
           count(*) FILTER (WHERE minor_screen) AS minor_screen,
           count(*) FILTER (WHERE minor_confirm) AS minor_confirm,
           count(*) FILTER (WHERE adult_sexual_screen) AS adult_sexual_screen,
           count(*) FILTER (WHERE adult_sexual_confirm) AS adult_sexual_confirm
    FROM scanned
    GROUP BY 1
)
SELECT c.lang,
       c.items,
       c.scanned,
       c.assessed,
       c.not_assessed,
       c.language_unsupported,
       c.assessed / c.items AS assessed_share,
       coalesce(t.minor_screen, 0) AS minor_screen,
       coalesce(t.minor_screen, 0) / nullif(c.scanned, 0) AS minor_screen_rate,
       wilson_lo(coalesce(t.minor_screen, 0), c.scanned) AS minor_screen_rate_lo,
       wilson_hi(coalesce(t.minor_screen, 0), c.scanned) AS minor_screen_rate_hi,
       coalesce(t.minor_confirm, 0) AS minor_confirm,
       coalesce(t.minor_confirm, 0) / nullif(c.scanned, 0) AS minor_confirm_rate,
       coalesce(t.adult_sexual_screen, 0) AS adult_sexual_screen,
       coalesce(t.adult_sexual_screen, 0) / nullif(c.scanned, 0) AS adult_sexual_screen_rate,
       wilson_lo(coalesce(t.adult_sexual_screen, 0), c.scanned) AS adult_sexual_screen_rate_lo,
       wilson_hi(coalesce(t.adult_sexual_screen, 0), c.scanned) AS adult_sexual_screen_rate_hi,
       coalesce(t.adult_sexual_confirm, 0) AS adult_sexual_confirm,
       coalesce(t.adult_sexual_confirm, 0) / nullif(c.scanned, 0) AS adult_sexual_confirm_rate
FROM coverage AS c
LEFT JOIN tagged AS t USING (lang)
ORDER BY c.items DESC, c.lang
