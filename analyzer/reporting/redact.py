"""Redaction: flagged content is never displayed.

Captions of items that are R1, adult-sexual (screen) or hash-matched are replaced by a placeholder that
names only the item id; URLs of those items are replaced by a short salted hash. Everything that shows rows
(report, notebook display helpers, CLI table output) goes through :func:`redact_rows`.
"""
from __future__ import annotations

import hashlib

REDACTED = "[redacted: flagged item]"


def url_hash(url: str | None) -> str | None:
    if url is None:
        return None
    return "urlsha256:" + hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def flagged_ids(con) -> set[str]:
    rows = con.execute("""
        SELECT item_id FROM item_scores WHERE coalesce(adult_sexual_screen, false)
        UNION SELECT item_id FROM item_risk_flagged WHERE r1
        UNION SELECT item_id FROM hash_matches
    """).fetchall()
    return {r[0] for r in rows}


def redact_rows(rows: list[dict], flagged: set[str]) -> list[dict]:
    """Return copies of rows with text/url/caption fields of flagged items redacted.

    Rows without an ``item_id`` have every text-like field redacted (nothing can prove they are clean).
    """
    out = []
    for r in rows:
        r = dict(r)
        bad = r.get("item_id") is None or r.get("item_id") in flagged
        if bad:
            for k in list(r):
                if k in ("text", "caption", "TEXT", "alt_text"):
                    r[k] = REDACTED
                elif k in ("url", "URL"):
                    r[k] = url_hash(r[k])
        out.append(r)
    return out


def flagged_values(con, values) -> dict[str, str]:
    """{value: 'text' | 'url'} for those of ``values`` that are the caption or URL of a flagged item."""
    from analyzer.store.sql import run_query

    vals = sorted({v for v in values if isinstance(v, str) and v})
    if not vals:
        return {}
    return {v: k for v, k in run_query(con, "flagged_values", {"values": vals}).fetchall()}


def redact_frame(df, con):
    """Polars or pandas frame -> same kind of frame with flagged captions and URLs redacted.

    Two rules: by column (``text``/``url`` of a flagged or unidentified row, :func:`redact_rows`), and by value:
    any string cell, in any column, equal to a flagged item's caption or URL is redacted too, so a query that
    renames or copies the caption column (``SELECT text AS t``) cannot show it.
    """
    try:
        import polars as pl
    except ImportError:  # pragma: no cover
        pl = None
    is_polars = pl is not None and isinstance(df, pl.DataFrame)
    rows = df.to_dicts() if is_polars else df.to_dict("records")
    if not rows:
        return df
    rows = redact_rows(rows, flagged_ids(con))
    hits = flagged_values(con, (v for r in rows for v in r.values()))
    for r in rows if hits else ():
        for k, v in r.items():
            if isinstance(v, str) and v in hits:
                r[k] = REDACTED if hits[v] == "text" else url_hash(v)
    if is_polars:
        return pl.DataFrame(rows, schema=df.schema)
    import pandas as pd

    return pd.DataFrame(rows, columns=df.columns)
