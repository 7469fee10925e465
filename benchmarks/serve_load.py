"""Load test of `latentdiff serve` against one CLI process per request, same model, same run.

A bounded client (at most --concurrency requests in flight) sends --requests generation requests
(distinct seeds) to a fresh server with a --queue-size queue. A 429 is counted and, honouring
Retry-After, the request is sent again (at most --max-retries times). Then it checks that every
request either completed or was finally refused with 429, that no job id or image is duplicated or
missing (each written PNG carries its request's seed), and that the server's RSS after the run is
flat against after the warm-up. Last, --cli-runs requests run as `latentdiff generate` processes,
one after another. It prints throughput (requests/s) and p50/p95 latency (submit to done, queueing
included) for both, and their ratios; and the latency of --cli-runs server requests sent one at a
time (no queue), the like-for-like comparison with one CLI process per request.

    python benchmarks/serve_load.py                          # shipped model, 50 requests
    python benchmarks/serve_load.py --model emoji-arch --requests 50 --concurrency 50 --queue-size 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support.common import log, machine, run_child, small_model, write_results  # noqa: E402


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def one_request(server, k: int, params: dict, max_retries: int) -> dict:
    t0, rejections = time.perf_counter(), 0
    while True:
        r = server.request("POST", "/v1/generate", json={**params, "prompt": f"red apple {k}", "seed": 1000 + k})
        if r.status_code != 429:
            break
        rejections += 1
        if rejections > max_retries:
            return {"k": k, "outcome": "429", "rejections": rejections, "latency": time.perf_counter() - t0}
        time.sleep(float(r.headers.get("Retry-After", "1")))
    assert r.status_code == 202, r.text
    job = server.wait_job(r.json()["id"], timeout=3600)
    return {
        "k": k,
        "outcome": job["state"],
        "rejections": rejections,
        "latency": time.perf_counter() - t0,
        "id": job["id"],
        "images": [i["name"] for i in job["images"]],
        "seeds": [i["params"]["seed"] for i in job["images"]],
        "service": job["finished"] - job["started"],
    }


def check_accounting(results: list[dict], out_dir: Path, n: int) -> dict:
    done = [r for r in results if r["outcome"] == "done"]
    refused = [r for r in results if r["outcome"] == "429"]
    assert len(done) + len(refused) == n, f"lost requests: {[r for r in results if r not in done + refused]}"
    ids = [r["id"] for r in done]
    assert len(set(ids)) == len(ids), "duplicated job ids"
    names = [name for r in done for name in r["images"]]
    assert len(names) == len(set(names)) == len(done), "an image is missing or duplicated"
    assert all(r["seeds"] == [1000 + r["k"]] for r in done), "an image answers another request"
    written = {p.name for p in out_dir.glob("*.png")}
    assert set(names) <= written, "an image the server reported is not on disk"
    return {
        "completed": len(done),
        "refused_429": len(refused),
        "rejections_429": sum(r["rejections"] for r in results),
    }


def percentile(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


def run_server_side(args, model: Path, params: dict, work: Path) -> tuple[dict, dict]:
    from latentdiff.server.process import ServerProcess

    out = work / "served"
    server = ServerProcess(work, "--model", model, "--out", out, "--queue-size", args.queue_size).wait_ready(600)
    try:
        for k in range(2):  # warm-up: first-call costs, preview fit
            server.wait_job(server.submit(**params, prompt="warm up", seed=k)["id"], timeout=600)
        rss_before = rss_mb(server.proc.pid)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(lambda k: one_request(server, k, params, args.max_retries), range(args.requests)))
        wall = time.perf_counter() - t0
        rss_after = rss_mb(server.proc.pid)
        alone = [one_request(server, args.requests + k, params, 0)["latency"] for k in range(args.cli_runs)]
    finally:
        server.stop()
    acc = check_accounting(results, out, args.requests)
    lat = [r["latency"] for r in results if r["outcome"] == "done"]
    row = {
        "contender": "server",
        "requests": acc["completed"],
        "wall_s": wall,
        "req_per_s": acc["completed"] / wall,
        "p50_s": percentile(lat, 50),
        "p95_s": percentile(lat, 95),
        "service_s": statistics.median(r["service"] for r in results if r["outcome"] == "done"),
    }
    alone_row = {
        "contender": "server, one request at a time",
        "requests": len(alone),
        "wall_s": sum(alone),
        "req_per_s": len(alone) / sum(alone),
        "p50_s": percentile(alone, 50),
        "p95_s": percentile(alone, 95),
    }
    return [row, alone_row], {
        **acc,
        "rss_mb_after_warmup": round(rss_before, 1),
        "rss_mb_after_run": round(rss_after, 1),
    }


def run_cli_side(args, model: Path, params: dict, work: Path) -> dict:
    lat = []
    for k in range(args.cli_runs):
        cmd = [
            sys.executable,
            "-m",
            "latentdiff.cli",
            "generate",
            f"red apple {k}",
            "--model",
            str(model),
            "--seed",
            str(1000 + k),
            "--out",
            str(work / "cli"),
            "--quiet",
        ]
        for flag in ("steps", "width", "height"):
            if params.get(flag):
                cmd += [f"--{flag}", str(params[flag])]
        wall, _, code, tail = run_child(cmd)
        assert code == 0, tail
        lat.append(wall)
    return {
        "contender": "cli process per request",
        "requests": len(lat),
        "wall_s": sum(lat),
        "req_per_s": len(lat) / sum(lat),
        "p50_s": percentile(lat, 50),
        "p95_s": percentile(lat, 95),
        "service_s": statistics.median(lat),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model dir, or emoji-arch; default: the shipped model, else a tiny one")
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=50, help="requests in flight at most (the bounded client)")
    ap.add_argument("--queue-size", type=int, default=16)
    ap.add_argument("--max-retries", type=int, default=1000)
    ap.add_argument("--cli-runs", type=int, default=5)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--size", type=int)
    args = ap.parse_args()
    model, label = small_model(args.model)
    params = {"steps": args.steps, "width": args.size, "height": args.size}
    meta = {**machine(), "model": label, "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        log(f"server: {args.requests} requests, {args.concurrency} in flight, queue {args.queue_size}, model {label}")
        server_rows, checks = run_server_side(args, model, params, Path(tmp))
        log(f"server checks: {json.dumps(checks)}")
        log(f"cli: {args.cli_runs} processes, one per request")
        cli_row = run_cli_side(args, model, params, Path(tmp))
    loaded, alone = server_rows
    ratios = [
        {
            "contender": f"{row['contender']} / cli",
            **{k: row[k] / cli_row[k] for k in ("req_per_s", "p50_s", "p95_s", "service_s") if k in row},
        }
        for row in server_rows
    ]
    meta["checks"] = checks
    notes = (
        f"Checks: {checks['completed']} completed, {checks['refused_429']} finally refused, "
        f"{checks['rejections_429']} 429 answers retried after Retry-After; no job or image lost or duplicated. "
        f"Server RSS {checks['rss_mb_after_warmup']} MiB after warm-up, {checks['rss_mb_after_run']} MiB after the run. "
        "Latency is submit-to-done (server: queueing included); service_s is the server's own time per job "
        "(CLI: the whole process)."
    )
    write_results(
        f"serve_load-{label}",
        [loaded, alone, cli_row, *ratios],
        ["contender", "requests", "wall_s", "req_per_s", "p50_s", "p95_s", "service_s"],
        meta,
        notes=notes,
    )
    print(notes)


if __name__ == "__main__":
    main()
