"""Ctrl-C while libraries are imported: taken when the imports finish, not in the middle.

An interrupt inside a C extension's import (numpy's, say) surfaces as an ImportError with a
misleading "bad install" message, or kills the import machinery half-way. Holding SIGINT during
those one or two seconds turns every early Ctrl-C into an ordinary KeyboardInterrupt (exit 130).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


@contextmanager
def interrupts_deferred():
    """Run the block with SIGINT held; if one arrived, raise KeyboardInterrupt afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers (and only it gets SIGINT)
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def import_torch() -> None:
    """Import torch (and numpy with it) now. Their C extensions turn an interrupt into a bogus
    ImportError; diffusers' and transformers' Python-level imports let KeyboardInterrupt through."""
    import torch  # noqa: F401
