"""The job queue: bounded, first come first served, one worker thread that owns the accelerator.

A job that fails (bad parameters the model rejects, out of memory, NaN) fails alone with its
message; the worker goes on with the next. `stop()` refuses new jobs, cancels the waiting ones and
the running one (at its next step) and waits for the worker: images already written stay.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from latentdiff.errors import Cancelled, LatentDiffError
from latentdiff.server.inputs import Pictures

log = logging.getLogger("latentdiff.server")
TERMINAL = ("done", "failed", "cancelled")


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; retry in about {retry_after} s")
        self.retry_after = retry_after


class NotAccepting(Exception):
    """The server is shutting down."""


@dataclass
class Job:
    params: dict  # Pipeline keyword arguments, prompt included (JSON: what GET /v1/jobs shows)
    inputs: Pictures = field(default_factory=Pictures)  # the picture files (init image, mask): never shown
    model: str | None = None
    source: str = "v1"  # which API submitted it ("v1", "a1111")
    a1111_rng: str | None = None  # A1111's noise source where A1111's own path is to run it if it can
    path_note: str | None = None  # why an A1111 request ran on diffusers' path (server/a1111_pixels.py)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    step: int = 0  # steps done over all batches
    total_steps: int = 0
    images: list = field(default_factory=list)  # {"name", "url", "params"} per written image
    error: str | None = None
    client_error: bool = False  # failed on the request's own input (a UsageError), not on the server's side
    preview: str | None = None  # data: URL of the latest step preview
    warnings: list = field(default_factory=list)  # one line each: what the user should know (a size far too big)
    stops_mid_step: bool = True  # cancelling stops before the UNet's next block (False: after the running step)
    version: int = 0  # bumped on every change; watchers compare it
    cancel: threading.Event = field(default_factory=threading.Event)

    def end(self, state: str | None = None, **changes) -> None:
        """Finish the job (done, failed, cancelled): its decoded pictures are let go at once, so a
        finished job holds only its parameters and the paths of its images."""
        self.inputs = Pictures()
        self.touch(**({"state": state} if state else {}), finished=time.time(), **changes)

    def touch(self, **changes) -> None:
        for k, v in changes.items():
            setattr(self, k, v)
        self.version += 1

    @property
    def stops(self) -> str:
        """When a cancel of this job takes effect, as the cancel endpoints answer it."""
        if self.state == "queued" or self.terminal:
            return "now"
        return "before the UNet's next block" if self.stops_mid_step else "after the running step (compiled UNet)"

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def to_dict(self, position: int | None = None, preview: bool = False) -> dict:
        d = {
            "id": self.id,
            "state": self.state,
            "position": position,
            "model": self.model,
            "params": self.params,
            "step": self.step,
            "total_steps": self.total_steps,
            "progress": round(self.step / self.total_steps, 4) if self.total_steps else 0.0,
            "images": list(self.images),
            "error": self.error,
            "warnings": list(self.warnings),
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }
        if preview:
            d["preview"] = self.preview
        return d


class JobQueue:
    def __init__(self, run, size: int, keep: int = 1000):
        """`run(job)` does the work on the worker thread, updating the job as it goes."""
        self._run, self.size, self.keep = run, size, keep
        self._waiting: deque[Job] = deque()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._cond = threading.Condition()
        self.running: Job | None = None
        self.accepting = True
        self._durations: deque[float] = deque(maxlen=20)
        self._worker = threading.Thread(target=self._loop, name="latentdiff-worker", daemon=True)
        self._worker.start()

    # ---- the HTTP side ----------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        with self._cond:
            if not self.accepting:
                raise NotAccepting()
            if len(self._waiting) >= self.size:
                raise QueueFull(self.retry_after())
            self._waiting.append(job)
            self._remember(job)
            self._cond.notify()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        with self._cond:
            return list(self._jobs.values())

    def position(self, job: Job) -> int | None:
        """0 for the running job, 1.. for waiting ones, None when finished."""
        with self._cond:
            if job is self.running:
                return 0
            return next((i + 1 for i, j in enumerate(self._waiting) if j is job), None)

    def cancel(self, job: Job) -> None:
        """A waiting job is dropped now; the running one stops at its next step."""
        job.cancel.set()
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)
                job.end("cancelled")

    def counts(self) -> dict:
        with self._cond:
            return {"running": int(self.running is not None), "waiting": len(self._waiting), "size": self.size}

    def retry_after(self) -> int:
        per_job = sum(self._durations) / len(self._durations) if self._durations else 5.0
        return max(1, round(per_job * (1 + len(self._waiting) / 2)))

    def stop(self, timeout: float | None = 60.0) -> None:
        self.close()
        self._worker.join(timeout)

    def close(self) -> None:
        """Refuse new jobs and cancel every job (the running one at its next step); no waiting."""
        with self._cond:
            self.accepting = False
            waiting, self._waiting = list(self._waiting), deque()
            running = self.running
            self._cond.notify_all()
        for job in waiting:
            job.cancel.set()
            job.end("cancelled")
        if running is not None:
            running.cancel.set()

    # ---- the worker side --------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while self.accepting and not self._waiting:
                    self._cond.wait()
                if not self._waiting:
                    return
                job = self.running = self._waiting.popleft()
            try:
                self._execute(job)
            finally:
                with self._cond:
                    self.running = None

    def _execute(self, job: Job) -> None:
        t0 = time.time()
        job.touch(state="running", started=t0)
        try:
            self._run(job)
            job.touch(state="done")
        except Cancelled:
            job.touch(state="cancelled")
        except LatentDiffError as e:
            job.touch(state="failed", error=str(e), client_error=e.exit_code == 2)
        except MemoryError:
            job.touch(state="failed", error="out of memory; try fewer images or a smaller size")
        except Exception as e:  # noqa: BLE001 - any failure fails this job alone; the server goes on
            log.exception("job %s failed", job.id)
            job.touch(state="failed", error=_one_line(e))
        finally:
            job.end()
            self._durations.append(time.time() - t0)
            _after_failure_cleanup(job)
            _return_freed_memory()

    def _remember(self, job: Job) -> None:
        self._jobs[job.id] = job
        for old_id in itertools.islice(list(self._jobs), max(0, len(self._jobs) - self.keep)):
            if self._jobs[old_id].terminal:
                del self._jobs[old_id]


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    name = type(e).__name__
    if "out of memory" in str(e).lower():
        return f"out of memory ({name}); try fewer images or a smaller size"
    return f"{name}: {text[0]}" if text else name


def _return_freed_memory() -> None:
    """Hand the heap's free pages back to the system after a job (glibc keeps them otherwise: ten
    4096 px pictures queued at once left the server ~95 MiB above its baseline, ~30 MiB with this)."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim  # noqa: B018 - glibc only: musl, macOS have none
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None


def _after_failure_cleanup(job: Job) -> None:
    if job.state == "failed":
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
