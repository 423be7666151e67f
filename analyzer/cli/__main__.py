"""``python -m analyzer.cli``: the same as the ``analyzer`` command."""
from analyzer.cli import console

console()
