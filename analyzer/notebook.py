"""The setup the analyst notebooks (notebooks/*.ipynb) share: one public call instead of copied lines.

    from analyzer.notebook import setup
    RUN = "runs/demo"          # the notebook's parameters cell
    run = setup(RUN)           # opens RUN; scans the sample into it first when RUN is not a complete run

A relative ``RUN`` is taken from the repository's root when the notebook runs inside a checkout (the directory
holding ``data-samples/``), so ``runs/demo`` is the run that ``make demo`` writes; else from the working directory.
The scan shows its progress bars; nothing is written outside ``RUN`` (no temporary files).
"""
from __future__ import annotations

import os
from pathlib import Path

import analyzer.reporting  # noqa: F401 - matplotlib set up the analyzer's way (no home config) before a notebook's pyplot
from analyzer.api import open_run, scan
from analyzer.run import Run

SAMPLE = Path("data-samples") / "laion_sample.parquet"


def repository_root(start: str | Path | None = None) -> Path | None:
    """The checkout that holds ``data-samples/laion_sample.parquet``: ``start`` (default: the working directory) or
    the nearest parent that does; None outside a checkout."""
    here = Path.cwd() if start is None else Path(start)
    for p in [here, *here.resolve().parents]:
        if (p / SAMPLE).is_file():
            return p
    return None


def resolve_run(run: str | Path) -> Path:
    """``run`` as a path: absolute as given; relative from the repository's root inside a checkout, else from the
    working directory."""
    p = Path(run).expanduser()
    if p.is_absolute():
        return p
    root = repository_root()
    return (root if root is not None else Path.cwd()) / p


def setup(run: str | Path = "runs/demo", *, data: str | Path | None = None, show_rows: int = 20,
          show_chars: int = 40, **scan_options) -> Run:
    """Open ``run``, scanning ``data`` into it first when it is not a complete run (progress shown; an interrupted
    scan resumes). ``data`` defaults to the repository's sample (``data-samples/laion_sample.parquet``, scanned with
    its precomputed text embeddings); ``scan_options`` go to :func:`analyzer.scan`.

    Also sets up the notebook: offline model loading, plots inline (matplotlib's inline backend when an IPython
    kernel runs this), and polars tables of ``show_rows`` rows with strings cut at ``show_chars`` characters."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _plots_inline()
    import polars as pl

    pl.Config.set_tbl_rows(show_rows)
    pl.Config.set_fmt_str_lengths(show_chars)
    path = resolve_run(run)
    if (path / "_SUCCESS").is_file():
        return open_run(path)
    if data is None:
        root = repository_root()
        if root is None:
            raise FileNotFoundError(f"{path} is not a complete run and no data= was given; pass data= or run the "
                                    "notebook inside the repository (to scan its sample)")
        data = root / SAMPLE
        scan_options = {"embedding_column": "embedding", "embedding_modality": "text", **scan_options}
    print(f"scanning {data} into {path} (once; later runs of the notebook open it)")
    return scan(data, out=path, quiet=False, **scan_options)


def _plots_inline() -> None:
    """The report's figure code selected matplotlib's Agg backend when this module imported it: switch an IPython
    kernel back to inline plots (nothing to do outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with every notebook kernel
        return
    ip = get_ipython()
    if ip is not None:
        ip.run_line_magic("matplotlib", "inline")
