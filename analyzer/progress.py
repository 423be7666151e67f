"""Progress bars for the long stages (tqdm on stderr; ``quiet=True`` disables them)."""
from __future__ import annotations

import sys


def progress(total: int | None = None, desc: str = "", unit: str = "rows", quiet: bool = False):
    """A tqdm bar on stderr: ``total`` None shows a running count without a percentage."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=quiet, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)
