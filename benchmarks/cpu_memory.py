"""Peak memory (RSS) of one generation per image size, each in a fresh process (its kernel-counted
peak, wait4's ru_maxrss), with the VAE decode whole or tiled; and what `serve --pin-weights` changes
when memory pressure evicts the weights: the major page faults (pages read back from disk) and the
time of a generation after the weight files' pages were pushed out (madvise MADV_PAGEOUT on their
mappings, what the kernel does to them under pressure).

    python benchmarks/cpu_memory.py                  # shipped model at 64 px; SD1.5 half width at 256/512 px
    python benchmarks/cpu_memory.py --skip-512       # without the 512 px rows (slow on a busy 2-core machine)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import common  # noqa: E402

MADV_PAGEOUT = 21  # linux/mman.h (5.4+)
TILE = 16  # latent pixels: 128 px windows of SD's VAE decode (4 windows at 256 px, 16 at 512 px)


def page_out(suffix: str = ".safetensors") -> int:
    """Push this process's pages of mapped files ending in `suffix` out of memory; bytes asked."""
    import ctypes

    libc, asked = ctypes.CDLL(None, use_errno=True), 0
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[-1].endswith(suffix):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_PAGEOUT) == 0:
                asked += end - start
    return asked


def child(spec: dict) -> None:
    """One generation as `spec` says; prints a JSON line of what it saw."""
    from latentdiff import Pipeline
    from latentdiff.runtime.memory import major_faults, pin_weights
    from latentdiff.workflows.decode import decode_latents

    pipe = Pipeline.from_pretrained(spec["model"], device="cpu", dtype="fp32")
    pipe.progress = False
    if spec.get("tile"):
        Pipeline.decode = lambda self, latents, tile=None: decode_latents(  # the loop's decode, tiled
            self.components.vae, latents, self.scale_factor, spec["tile"]
        )
    c = pipe.components
    pinned = pin_weights(c.unet, c.vae, *c.text_encoders()) if spec.get("pin") else 0
    size = spec["size"]
    out = {"pinned_mb": pinned / 2**20, "rss_loaded_mb": common.current_rss_mb()}
    if spec.get("page_out"):
        pipe("a red apple", steps=1, width=size, height=size, seed=0)  # warm: every page touched once
        out["paged_out_mb"] = page_out() / 2**20
    faults, t0 = major_faults(), time.perf_counter()
    pipe("a red apple", steps=spec.get("steps", 1), width=size, height=size, seed=0)
    out.update(call_s=time.perf_counter() - t0, major_faults=major_faults() - faults)
    print(json.dumps(out), flush=True)


def run(spec: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": str(common.REPO_ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    wall, peak_mb, rc, tail = common.run_child(cmd, env=env)
    if rc != 0:
        raise SystemExit(f"child failed ({rc}): {tail}")
    seen = json.loads([x for x in tail.splitlines() if x.startswith("{")][-1])
    row = {**spec, "model": Path(spec["model"]).name, "peak_rss_mb": peak_mb, "process_s": wall, **seen}
    common.log(str(row))
    return row


def main(args) -> None:
    shipped, _ = common.small_model(None)
    sd15 = str(common.sd15_model(width=0.5))
    specs = [
        {"model": str(shipped), "size": 64},
        {"model": sd15, "size": 256},
        {"model": sd15, "size": 256, "tile": TILE},
    ]
    for model, size in ((str(shipped), 64), (sd15, 256)):
        specs += [{"model": model, "size": size, "page_out": True, "pin": pin} for pin in (False, True)]
    if not args.skip_512:
        specs += [{"model": sd15, "size": 512}, {"model": sd15, "size": 512, "tile": TILE}]
    meta, rows = common.machine(), []
    done = common.RESULTS_DIR / f"{args.name}.json"
    if args.resume and done.is_file():  # rows measured by an earlier, stopped run
        rows = json.loads(done.read_text())["rows"]
        measured = [{k: r[k] for k in ("size", "tile", "pin", "page_out") if k in r} for r in rows]
        specs.sort(key=lambda s: s["model"] != str(shipped))  # the cheap rows first
        specs = [s for s in specs if {k: v for k, v in s.items() if k != "model"} not in measured]
    columns = ["model", "size", "tile", "pin", "page_out", "peak_rss_mb", "rss_loaded_mb", "major_faults", "call_s"]
    notes = (
        "One generation of 1 step per process. peak_rss_mb: the whole process's peak (loading included); tile: VAE decode windows in latent px "
        "(blended); the page_out rows push the weight files' mapped pages out after a warm call (as memory "
        "pressure does), then time one more call and count its major page faults; pin: serve --pin-weights."
    )
    for spec in specs:  # the table is rewritten after each row: a stopped run keeps what it measured
        rows.append(run(spec))
        common.write_results(args.name, rows, columns, meta, notes=notes)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--skip-512", action="store_true")
    ap.add_argument("--name", default="cpu_memory")
    ap.add_argument("--resume", action="store_true", help="keep the rows of an earlier run of --name, run the rest")
    a = ap.parse_args()
    child(json.loads(a.child)) if a.child else main(a)
