"""Errors that the CLI turns into one clear line and exit code 2.

Every check at the boundary (bad input files, bad options, bad bank or policy files) raises
:class:`InputError` with a message of the form "expected X, got Y; how to fix". The CLI prints
``analyzer: error: <message>`` on stderr and exits 2, never a traceback.
"""
from __future__ import annotations


class AnalyzerError(Exception):
    """Base class of every error the analyzer raises on purpose."""

    exit_code = 2


class InputError(AnalyzerError, ValueError):
    """Bad input, bad options or a bad data file: one line, exit code 2."""


class RunIncompleteError(AnalyzerError):
    """A run directory is missing or its stages did not complete."""
