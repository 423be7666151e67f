-- Known-hash matches for the escalation package, one row per (item, list). Parameters: none.
SELECT item_id, list_name, hash_kind, distance, item_hash
FROM hash_matches
ORDER BY item_id, list_name
