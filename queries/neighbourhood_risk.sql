-- R2 per flagged item: the share of its $k nearest neighbours (embedding space, cosine) that carry the
-- other primary concept at screen. direction 'adult_to_minor': an adult_sexual item and the minor share of
-- its neighbourhood; 'minor_to_adult': a minor item and the adult_sexual share of its neighbourhood.
-- r2 is that cross share; bridge = r2 >= $bridge_share; lift = r2 over the concept's dataset rate.
-- The items removed by $strategy are left out first, as queries and as neighbours: each item's k nearest
-- KEPT neighbours are taken from the stored list (flagged_neighbours keeps K >= k per item).
-- The dataset rates are the scanned counts (table group_counts) minus those of the removed items.
-- Reads recommendations, removed_scanned, group_counts, flagged_neighbours and flagged_scanned (no table of
-- every item: at 10M rows each of the five runs of this query would otherwise join millions of rows by id).
-- Ids and scores only, never captions. Parameters: $strategy ('none' or a strategy), $k, $bridge_share.
WITH removed AS (
    SELECT DISTINCT item_id FROM recommendations WHERE strategy = $strategy
),
removed_flags AS (
    SELECT coalesce(s.minor_screen, false) AS m,
           coalesce(s.adult_sexual_screen, false) AS a
    FROM removed_scanned AS s  -- the scanned rows of recommended items (queries/removed_scanned.sql)
    SEMI JOIN removed AS r USING (item_id)
),
rates AS (
    SELECT (t.m - r.m) / greatest(t.n - r.n, 1) AS m_rate,
           (t.a - r.a) / greatest(t.n - r.n, 1) AS a_rate
    FROM (SELECT CAST(coalesce(sum(items), 0) AS BIGINT) AS n,
                 CAST(coalesce(sum(minor_screen), 0) AS BIGINT) AS m,
                 CAST(coalesce(sum(adult_sexual_screen), 0) AS BIGINT) AS a
          FROM group_counts WHERE group_kind = 'source') AS t
    CROSS JOIN (SELECT count(*) AS n, count(*) FILTER (WHERE m) AS m, count(*) FILTER (WHERE a) AS a
                FROM removed_flags) AS r
),
kept_neighbours AS (
    -- the stored neighbours of kept flagged items, less the removed neighbours
    SELECT n.item_id, n.neighbour_id, n.rank, n.similarity
    FROM flagged_neighbours AS n
    ANTI JOIN removed AS r ON r.item_id = n.neighbour_id
    ANTI JOIN removed AS q ON q.item_id = n.item_id
),
affected AS (
    -- the items that lost a stored neighbour to the removals: only their kept neighbours' ranks move
    SELECT DISTINCT n.item_id FROM flagged_neighbours AS n SEMI JOIN removed AS r ON r.item_id = n.neighbour_id
),
nearest AS (
    -- each item's $k nearest kept neighbours, before anything is joined to them (stored ranks are 1, 2, ...;
    -- the rows of the other items are not re-ranked: a window over every stored row cost 0.5-1 s at 10M rows)
    SELECT item_id, neighbour_id, similarity
    FROM kept_neighbours ANTI JOIN affected USING (item_id)
    WHERE rank <= $k
    UNION ALL
    SELECT item_id, neighbour_id, similarity
    FROM (SELECT n.*, row_number() OVER (PARTITION BY n.item_id ORDER BY n.rank) AS r
          FROM kept_neighbours AS n SEMI JOIN affected USING (item_id))
    WHERE r <= $k
),
per_item AS (
    -- a neighbour carries a concept at screen only if it is in flagged_scanned (queries/flagged_scanned.sql);
    -- every neighbour is a scanned item (the index stage reads the embeddings of scanned items only), so no
    -- join with all of scanned is needed
    SELECT n.item_id,
           count(*) AS neighbours,
           avg(CAST(coalesce(f.minor_screen, false) AS DOUBLE)) AS minor_share,
           avg(CAST(coalesce(f.adult_sexual_screen, false) AS DOUBLE)) AS adult_share,
           avg(n.similarity) AS mean_similarity
    FROM nearest AS n
    LEFT JOIN flagged_scanned AS f ON f.item_id = n.neighbour_id
    GROUP BY n.item_id
),
queries AS (
    -- the kept items flagged at screen that have neighbours
    SELECT s.item_id,
           coalesce(s.minor_screen, false) AS m,
           coalesce(s.adult_sexual_screen, false) AS a
    FROM flagged_scanned AS s
    SEMI JOIN per_item AS p USING (item_id)
    WHERE coalesce(s.minor_screen, false) OR coalesce(s.adult_sexual_screen, false)
),
directed AS (
    SELECT q.item_id, 'adult_to_minor' AS direction, p.neighbours, p.minor_share, p.adult_share,
           p.mean_similarity, p.minor_share AS r2, p.minor_share / nullif(rates.m_rate, 0) AS lift
    FROM queries AS q JOIN per_item AS p USING (item_id) CROSS JOIN rates
    WHERE q.a
    UNION ALL
    SELECT q.item_id, 'minor_to_adult' AS direction, p.neighbours, p.minor_share, p.adult_share,
           p.mean_similarity, p.adult_share AS r2, p.adult_share / nullif(rates.a_rate, 0) AS lift
    FROM queries AS q JOIN per_item AS p USING (item_id) CROSS JOIN rates
    WHERE q.m
)
SELECT item_id,
       direction,
       CAST($k AS INTEGER) AS k,
       neighbours,
       minor_share,
       adult_share,
       mean_similarity,
       r2,
       lift,
       r2 >= $bridge_share AS bridge
FROM directed
ORDER BY r2 DESC, direction, item_id
