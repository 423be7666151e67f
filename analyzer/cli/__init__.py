"""The `analyzer` command line: a thin layer over analyzer.api, one module per subcommand.

Exit codes: 0 success, 1 a failed sign-off gate, 2 bad input or usage (one line on stderr, no traceback).
"""
from __future__ import annotations

import argparse
import faulthandler
import importlib
import logging
import os
import sys

from analyzer import __version__
from analyzer.errors import AnalyzerError

# analyzer/cli/<name>.py, each with register(subparsers) and the subcommand's run(args)
COMMANDS = ("scan", "tag", "evaluate", "query", "report", "probe", "audit_bias", "signoff", "apply", "hashes",
            "stress")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"analyzer: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="analyzer", description="Dataset composition risk analyzer")
    p.add_argument("--version", action="version", version=f"analyzer {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for unexpected errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"analyzer.cli.{name}").register(sub)
    return p


def _one_line(exc: BaseException) -> str:
    """The error message on one line (messages that quote a library error can hold newlines)."""
    return " ".join(str(exc).split())


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # model-loading bars: stderr is for errors
    logging.basicConfig(level=logging.WARNING, format="analyzer: %(message)s")
    for noisy in ("sentence_transformers", "transformers", "huggingface_hub", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AnalyzerError as exc:
        print(f"analyzer: error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("analyzer: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except (OSError, MemoryError) as exc:
        if args.debug:
            raise
        print(f"analyzer: error: expected readable inputs and a writable output, got {type(exc).__name__}: "
              f"{_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - last resort: still one line, no traceback
        if args.debug:
            raise
        print(f"analyzer: internal error: {type(exc).__name__}: {_one_line(exc)[:300]} (re-run with --debug for "
              "details)", file=sys.stderr)
        return 1


def console() -> None:
    """The ``analyzer`` command. ``faulthandler`` names a fatal signal on stderr (e.g. SIGBUS from an input file cut
    while the scan maps it): the run then stays incomplete and re-running the same command resumes it."""
    faulthandler.enable()
    sys.exit(main())
