"""The command line: one module per command; `main` parses argv, runs the command, and turns known
errors into one line and an exit code (2 usage, 1 failure). Importing it does not import torch."""

from latentdiff.cli.main import main

__all__ = ["main"]
