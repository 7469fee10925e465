"""The libraries we build on, told to keep quiet: diffusers and transformers print progress bars
and advice on every load and save; our users get one progress bar of our own instead."""

from __future__ import annotations


def quiet_libraries() -> None:
    import diffusers
    import transformers

    for lib in (diffusers, transformers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()
