"""A real `latentdiff serve` child process on loopback, for the tests and benchmarks/serve_load.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, workdir: Path, *args, token: str | None = None, env: dict | None = None):
        self.port, self.token, self.workdir = free_port(), token, Path(workdir)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / f"server-{self.port}.log"
        cmd = [sys.executable, "-m", "latentdiff.cli", "serve", "--port", str(self.port), *map(str, args)]
        if token:
            cmd += ["--token", token]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/v1/health", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server did not answer within {timeout} s:\n{self.log()}")

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, auth: bool = True, **kw) -> requests.Response:
        headers = {**(self.headers() if auth else {}), **kw.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=kw.pop("timeout", 120), **kw)

    def submit(self, **params) -> dict:
        r = self.request("POST", "/v1/generate", json=params)
        assert r.status_code == 202, r.text
        return r.json()

    def wait_job(self, job_id: str, timeout: float = 120, states=("done", "failed", "cancelled")) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.request("GET", f"/v1/jobs/{job_id}").json()
            if job["state"] in states:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
