"""Start the server: load the default model (a bad --model fails before binding), then uvicorn.
Ctrl-C / SIGTERM stop taking jobs, cancel the running one at its next step, and return."""

from __future__ import annotations

import logging
import signal
import sys

from latentdiff.errors import UsageError
from latentdiff.server.config import ServeConfig


def serve(cfg: ServeConfig) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UsageError("the server needs its extra dependencies: pip install 'latentdiff[serve]'") from None
    # After the check above: the server's modules need the serve extra (fastapi).
    from latentdiff.server.app import Server, create_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s", stream=sys.stderr)
    server = Server(cfg)
    try:
        server.pool.get(None)  # load now: a broken default model is a failed start, not a failed job
    except BaseException:
        server.queue.stop(timeout=5)
        raise
    app = create_app(server)

    class _Uvicorn(uvicorn.Server):
        def handle_exit(self, sig, frame):
            server.queue.close()  # before uvicorn waits for open requests, which wait for their jobs
            super().handle_exit(sig, frame)

    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    print(f"latentdiff: serving on http://{host}:{cfg.port}/ (API docs at /docs)", file=sys.stderr, flush=True)
    # uvicorn re-raises the stop signal once it is done, to the handler it found: make that one a
    # no-op so that the worker can be joined and the stop reported (exit 0: stopping was asked for).
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _Uvicorn(
            uvicorn.Config(
                app, host=cfg.host, port=cfg.port, log_level="info", timeout_graceful_shutdown=10, server_header=False
            )
        ).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    server.queue.stop(timeout=60)
    n = sum(len(j.images) for j in server.queue.jobs())
    print(f"latentdiff: stopped; {n} image(s) written to {server.out_dir} are kept", file=sys.stderr, flush=True)
    return 0
