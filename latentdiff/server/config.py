"""The server's options, checked before anything heavy is imported (a refused start is instant)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from latentdiff.errors import UsageError

# A body is read into memory whole (and its pictures decoded): 1 GiB is far above any request of
# ours (a 4096 px picture and mask as uncompressed PNG, base64: about 90 MB). A budget of weights
# kept loaded above 1 TB is a typo. Both comparisons refuse NaN too.
MAX_BODY_MB, MAX_BUDGET_GB = 1024, 1024


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    model: str | None = None  # the default model (None: the shipped one)
    models_dir: str | None = None  # other models a request may name, by folder name
    token: str | None = None
    insecure_no_auth: bool = False
    compile: bool | str = False
    queue_size: int = 16  # jobs waiting (the running one not counted)
    out: str = "outputs"
    cors: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    memory_budget_gb: float | None = None  # loaded models' weights; None: half the RAM
    max_body_mb: float = 16.0
    max_jobs_kept: int = 1000  # finished jobs remembered for GET /v1/jobs/{id}

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port must be between 0 and 65535, got {self.port}")
        if self.queue_size < 1:
            raise UsageError(f"--queue-size must be >= 1, got {self.queue_size}")
        if not (isinstance(self.max_body_mb, (int, float)) and 0 < self.max_body_mb <= MAX_BODY_MB):
            raise UsageError(f"--max-body-mb must be > 0 and at most {MAX_BODY_MB}, got {self.max_body_mb}")
        budget = self.memory_budget_gb
        if budget is not None and not (isinstance(budget, (int, float)) and 0 < budget <= MAX_BUDGET_GB):
            raise UsageError(f"--memory-budget must be > 0 GB and at most {MAX_BUDGET_GB} GB, got {budget}")
        if self.max_jobs_kept < 1:
            raise UsageError(f"max_jobs_kept must be >= 1, got {self.max_jobs_kept}")
        if self.token is not None and len(self.token) < 8:
            raise UsageError("--token must be at least 8 characters")
        if not is_loopback(self.host) and not self.token and not self.insecure_no_auth:
            raise UsageError(
                f"--host {self.host} is reachable from other machines: give --token T "
                "(clients send 'Authorization: Bearer T'), or --insecure-no-auth to accept anyone"
            )
        if self.models_dir is not None and not Path(self.models_dir).is_dir():
            raise UsageError(f"--models-dir {self.models_dir} is not a directory")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def memory_budget_bytes(self) -> int:
        if self.memory_budget_gb is not None:
            return int(self.memory_budget_gb * 1024**3)
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
        except (ValueError, OSError, AttributeError):  # not POSIX: a conservative 4 GB
            return 4 * 1024**3


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere
