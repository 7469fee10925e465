"""RSS of `latentdiff serve` under a stream of large image requests: does it give memory back?

A fresh server (the tiny test model, CPU, fp32) gets a warm-up request (a small img2img, which loads
torch, the model and the preview map), then --requests img2img/inpaint requests whose inputs are
--side px PNGs that compress to a few KB (a smooth gradient; the mask a white rectangle), worked at
64x64 so that the pictures, not the generation, are what costs memory. Each request is sent when
the previous one is done (a stream; --together queues them all at once). The server's RSS is read
from /proc before the stream (after the warm-up), every 50 ms during it (the peak), and after it
(after the last job finished and a short settle). It prints the three figures and after/before.

Issue 24's defect: each finished job kept its decoded picture and mask (4096 px: 48 + 16 MiB), so
ten requests of under 100 KB took a server from 504 MB to 1.4 GB, never returned.

    python benchmarks/server_memory.py                      # 10 requests of 4096 px, both routes
    python benchmarks/server_memory.py --requests 20 --side 4096 --route a1111
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support.common import log, tiny_model  # noqa: E402

WORK = dict(width=64, height=64, steps=2, seed=1)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def png_b64(side: int, mask: bool = False) -> str:
    """A side x side PNG that compresses small: a gradient (or, for a mask, a white rectangle)."""
    import numpy as np
    from PIL import Image

    if mask:
        im = Image.new("L", (side, side), 0)
        im.paste(255, (side // 4, side // 4, side // 2, side // 2))
    else:
        ramp = np.linspace(0, 255, side, dtype=np.uint8)
        im = Image.fromarray(np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], ramp[None, :]), axis=-1))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def body(route: str, k: int, picture: str, mask: str | None) -> tuple[str, dict]:
    if route == "a1111":
        b = {"prompt": f"stream {k}", "init_images": [picture], "denoising_strength": 0.5, **WORK}
        return "/sdapi/v1/img2img", {**b, "mask": mask} if mask else b
    b = {"prompt": f"stream {k}", "init_image": picture, "strength": 0.5, **WORK}
    return "/v1/generate", {**b, "mask": mask} if mask else b


def send(server, route: str, k: int, picture: str, mask: str | None, wait: bool = True) -> str | None:
    """Send one request; A1111 answers when done, a /v1 job is waited for when `wait`."""
    path, payload = body(route, k, picture, mask)
    r = server.request("POST", path, json=payload, timeout=600)
    assert r.status_code in (200, 202), r.text
    if route == "v1":
        if not wait:
            return r.json()["id"]
        assert server.wait_job(r.json()["id"], timeout=600)["state"] == "done"
    return None


class Sampler(threading.Thread):
    """Reads a process's RSS every `every` seconds; `peak` is the highest seen."""

    def __init__(self, pid: int, every: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.done = pid, every, 0.0, threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (OSError, StopIteration):
                return
            time.sleep(self.every)


def measure(
    n: int = 10, side: int = 4096, routes=("v1", "a1111"), together: bool = False, model: Path | None = None
) -> dict:
    """{"before", "peak", "after", "ratio", "input_kb"} in MiB for a fresh server (see the docstring)."""
    from latentdiff.server.process import ServerProcess

    model = model or tiny_model()
    picture, mask = png_b64(side), png_b64(side, mask=True)
    small, small_mask = png_b64(64), png_b64(64, mask=True)
    with tempfile.TemporaryDirectory() as tmp:
        # a body limit that lets the inputs through; a queue that holds the whole stream when --together
        args = ["--model", model, "--out", Path(tmp) / "out", "--device", "cpu", "--dtype", "fp32"]
        args += ["--queue-size", max(n, 2), "--max-body-mb", 64]
        server = ServerProcess(Path(tmp), *args).wait_ready(600)
        try:
            for route in routes:  # warm-up: every route and code path once, at a small size
                send(server, route, -1, small, None)
                send(server, route, -2, small, small_mask)
            time.sleep(1.0)
            before = rss_mb(server.proc.pid)
            sampler = Sampler(server.proc.pid)
            sampler.start()
            ids = []
            for k in range(n):
                route = routes[k % len(routes)]
                ids.append(send(server, route, k, picture, mask if (k // len(routes)) % 2 else None, wait=not together))
            for job_id in filter(None, ids):
                assert server.wait_job(job_id, timeout=600)["state"] == "done"
            time.sleep(1.0)
            after = rss_mb(server.proc.pid)
            sampler.done.set()
            sampler.join()
        finally:
            server.stop()
    peak = max(sampler.peak, after)
    return {
        "before": before,
        "peak": peak,
        "after": after,
        "ratio": after / before,
        "input_kb": (len(picture) + len(mask)) * 3 / 4 / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--side", type=int, default=4096, help="px a side of the input pictures")
    ap.add_argument("--route", choices=["v1", "a1111", "both"], default="both")
    ap.add_argument("--together", action="store_true", help="queue every /v1 request at once (peak: queued inputs)")
    args = ap.parse_args()
    routes = ("v1", "a1111") if args.route == "both" else (args.route,)
    log(f"{args.requests} requests of {args.side} px ({', '.join(routes)}), tiny model, CPU")
    m = measure(args.requests, args.side, routes, args.together)
    print(
        f"inputs: picture + mask {m['input_kb']:.0f} KB as files; RSS before {m['before']:.0f} MiB, "
        f"peak {m['peak']:.0f} MiB, after {m['after']:.0f} MiB (after/before {m['ratio']:.2f})"
    )


if __name__ == "__main__":
    main()
