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
        UNION SELECT item_id FROM item_risk WHERE r1
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


def redact_frame(df, con):
    """Polars or pandas frame -> same kind of frame with flagged captions and URLs redacted."""
    flagged = flagged_ids(con)
    try:
        import polars as pl

        if isinstance(df, pl.DataFrame):
            return pl.DataFrame(redact_rows(df.to_dicts(), flagged), schema=df.schema) if df.height else df
    except ImportError:  # pragma: no cover
        pass
    import pandas as pd

    return pd.DataFrame(redact_rows(df.to_dict("records"), flagged), columns=df.columns)
