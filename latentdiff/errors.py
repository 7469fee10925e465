"""Errors users can act on. The CLI turns these into one line and an exit code."""


class LatentDiffError(Exception):
    """A failure while doing valid work (exit code 1)."""

    exit_code = 1


class UsageError(LatentDiffError, ValueError):
    """Bad input from the user: a flag, a path, a file they gave us (exit code 2)."""

    exit_code = 2


class ModelError(UsageError):
    """A model reference that cannot be resolved or loaded as given."""


class Cancelled(LatentDiffError):
    """Raised by a step callback to stop a generation at the end of the current step."""
