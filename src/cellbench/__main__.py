"""``python -m cellbench``: the command line."""

from .cli import main

main()
