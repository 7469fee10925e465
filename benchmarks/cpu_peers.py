"""latentdiff against the CPU engines people use instead, on the same weights and machine, in one run.

    python benchmarks/cpu_peers.py --size 256 --steps 6 --rounds 3             # SD1.5 width
    python benchmarks/cpu_peers.py --width 0.5 --size 256 --steps 4 --rounds 3  # half width (215M UNet)

One random SD1.5-architecture model (CLIP's tokenizer and vocabulary, seeded weights; built once
under $LATENTDIFF_BENCH_CACHE) is written as a single file by latentdiff's convert; then the same
txt2img job (the prompt of support/common.py, seed 0, Euler, CFG 7.5, N steps, WxW, batch 1, T
threads each) runs on:

- latentdiff: `Pipeline.from_pretrained(file)`, `pipe.threads = T`
- diffusers: `StableDiffusionPipeline.from_pretrained(folder)` with EulerDiscreteScheduler
- openvino-fp32 / openvino-int8: optimum-intel's OVStableDiffusionPipeline exported from the folder
  (int8: NNCF 8-bit weight compression of the fp32 export), static shape, f32 inference, INFERENCE_NUM_THREADS = T
- sdcpp-f32 / sdcpp-q8_0: stable-diffusion.cpp's Python package on the single file (q8_0 quantized at
  load); it builds SD 1.x at the released widths only, so it runs the full-width model, not --width 0.5
- comfyui: ComfyUI's engine without its server (checkpoint loader, CLIPTextEncode, KSampler
  euler/normal, VAE decode) on the single file; for --width 0.5 its SD15 class takes the file's width

Each engine runs in its own process per round (support/peer_engine.py, under the interpreter of
the environment it is installed in: see --python), which loads the model, makes a 1-step warm-up
call and then the timed call; loading and warm-up are reported, not timed into the result. Rounds
rotate the order so drifting load hits every engine; the load average before and after each run is
recorded. Reported per engine: the median, min and max of the timed call, the child's peak RSS
(wait4, loading included) and the RSS peak during the call, latentdiff's time divided by the
engine's (ratio of medians, and the median of the per-round ratios), and the image's PSNR against
diffusers' (PICTURE says what it means per engine: latentdiff draws diffusers' noise and runs its
scheduler, so it should match; ComfyUI draws the same start noise; OpenVINO through optimum-intel and
stable-diffusion.cpp make different pictures, so their quantized variants are held against their own
fp32 instead). An engine that is not installed or fails is named with the reason; `--rescore JSON
IMAGES` rewrites a finished run's tables. Both torch engines, ComfyUI and OpenVINO get
OMP_WAIT_POLICY=PASSIVE unless --omp-wait-policy inherit.

The peers are benchmark dependencies, never the project's: each lives in its own environment
(defaults below; --python ENV=PATH for others), made once with the registry's packages:

    python -m venv --system-site-packages /tmp/peers-ov      # reuses torch/transformers for the export
    /tmp/peers-ov/bin/pip install "optimum-intel[openvino]" nncf diffusers "huggingface-hub<1.22"
    python -m venv /tmp/peers-sdcpp                          # builds ggml from source: ~25+ min on 2 cores
    nice /tmp/peers-sdcpp/bin/pip install stable-diffusion-cpp-python
    python -m venv --system-site-packages /tmp/peers-comfyenv && /tmp/peers-comfyenv/bin/pip install einops av
    # ComfyUI's source tree in /tmp/peers-comfy (--comfy-dir): a checkout or `git archive` of Comfy-Org/ComfyUI
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support import common  # noqa: E402
from support.cpu import cpu_description  # noqa: E402

WORKER = common.BENCH_DIR / "support" / "peer_engine.py"
# label: (engine, variant, environment, the module that proves it is installed, same noise as diffusers)
CONTENDERS = {
    "latentdiff": ("latentdiff", "", "main", "latentdiff"),
    "diffusers": ("diffusers", "", "main", "diffusers"),
    "openvino-fp32": ("openvino", "", "openvino", "optimum.intel"),
    "openvino-int8": ("openvino", "int8", "openvino", "nncf"),
    "sdcpp-f32": ("sdcpp", "", "sdcpp", "stable_diffusion_cpp"),
    "sdcpp-q8_0": ("sdcpp", "q8_0", "sdcpp", "stable_diffusion_cpp"),
    "comfyui": ("comfyui", "", "comfyui", "einops"),
}
# What an engine's PSNR against diffusers' image says (measured, tiny and SD1.5 layouts, 2026-12).
PICTURE = {
    "latentdiff": "the same noise and scheduler as diffusers: the same picture",
    "openvino": "optimum-intel does not draw diffusers' start noise from the same torch generator: a different "
    "picture, its int8 against its fp32 in psnr_vs_fp32_db",
    "sdcpp": "its own noise (its CUDA-style RNG) and sigma schedule: a different picture",
    "comfyui": "the same start noise (torch's CPU generator), its own sigma spacing ('normal') and CLIP code",
}
ENVS = {"main": sys.executable, "openvino": "/tmp/peers-ov/bin/python", "sdcpp": "/tmp/peers-sdcpp/bin/python"}
ENVS["comfyui"] = "/tmp/peers-comfyenv/bin/python"


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=float, default=1.0, help="UNet width vs SD1.5 (0.5: a quarter of the compute)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--engines", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    ap.add_argument(
        "--python",
        action="append",
        default=[],
        metavar="ENV=PATH",
        help=f"the interpreter of an environment ({', '.join(ENVS)}); defaults: {ENVS}",
    )
    ap.add_argument("--comfy-dir", default="/tmp/peers-comfy", help="a ComfyUI source tree")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds one engine run may take")
    ap.add_argument("--omp-wait-policy", choices=["PASSIVE", "inherit"], default="PASSIVE")
    ap.add_argument("--name", help="results file name (default: cpu_peers-MODEL-SIZE-STEPS)")
    ap.add_argument(
        "--rescore",
        nargs=2,
        metavar=("JSON", "IMAGES"),
        help="rewrite a finished run's tables from its JSON and the folder of images its log names",
    )
    return ap.parse_args(argv)


def single_file(folder: Path) -> Path:
    """The folder as one A1111-layout file, written by latentdiff's convert (once)."""
    out = folder.with_name(folder.name + ".safetensors")
    if not out.is_file():
        from latentdiff.formats.convert import convert

        tmp = out.with_name(out.stem + f".tmp{os.getpid()}.safetensors")
        convert(str(folder), str(tmp))
        tmp.rename(out)
    return out


def unavailable(label: str, args, envs: dict) -> str | None:
    """Why `label` cannot run here, or None."""
    engine, _, env, module = CONTENDERS[label]
    python = envs[env]
    if not Path(python).exists():
        return f"not installed: no environment at {python} (see docs/performance.md for how to make one)"
    if engine == "comfyui" and not (Path(args.comfy_dir) / "comfy" / "sd.py").is_file():
        return f"no ComfyUI source tree at {args.comfy_dir}"
    probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    if probe.returncode:
        return f"not importable in {python}: " + (probe.stderr.strip().splitlines() or ["?"])[-1]
    return None


def run_engine(label: str, args, model: dict, envs: dict, out_dir: Path, r: int) -> dict:
    engine, variant, env, _ = CONTENDERS[label]
    out = out_dir / f"{label}-{r}.png"
    cmd = [envs[env], str(WORKER), engine, str(out), "--folder", str(model["folder"]), "--file", str(model["file"])]
    cmd += ["--threads", str(args.threads), "--steps", str(args.steps), "--size", str(args.size)]
    cmd += ["--guidance", str(args.guidance), "--prompt", common.PROMPT, "--variant", variant]
    cmd += ["--comfy-dir", args.comfy_dir, "--ov-cache", str(model["folder"]) + f"-openvino{variant and '-' + variant}"]
    env_vars = {**os.environ, "PYTHONPATH": str(common.REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    if args.omp_wait_policy != "inherit":
        env_vars["OMP_WAIT_POLICY"] = args.omp_wait_policy
    before = common.load_average()
    wall, peak, code, tail = common.run_child(cmd, env=env_vars, cwd=str(common.REPO_ROOT))
    rec = {"round": r, "load_before": before, "load_after": common.load_average(), "wall_s": wall}
    rec["child_peak_rss_mib"] = peak
    if code or not Path(str(out) + ".json").is_file():
        return {**rec, "error": f"exit {code}: " + (tail.strip().splitlines() or ["no output"])[-1][:300]}
    return {**rec, **json.loads(Path(str(out) + ".json").read_text()), "image": str(out)}


def psnr(a_path: str, b_path: str) -> tuple[float, int]:
    import numpy as np
    from PIL import Image

    a, b = (np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for p in (a_path, b_path))
    mse = ((a - b) ** 2).mean()
    return (float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))), int(np.abs(a - b).max())


def rows_for(runs: dict, reasons: dict) -> list[dict]:
    ok = {k: [x for x in v if "error" not in x] for k, v in runs.items()}
    med = {k: common.median([x["call_s"] for x in v]) for k, v in ok.items() if v}
    ours = {x["round"]: x["call_s"] for x in ok.get("latentdiff", [])}
    rows = []
    for label in runs:
        if label not in med:
            why = reasons.get(label) or (runs[label][-1]["error"] if runs[label] else "not run yet")
            rows.append({"engine": label, "note": why})
            continue
        calls = [x["call_s"] for x in ok[label]]
        paired = [ours[x["round"]] / x["call_s"] for x in ok[label] if x["round"] in ours]
        row = {"engine": label, "version": ok[label][0]["version"], "median_s": med[label]}
        row.update(min_s=min(calls), max_s=max(calls), runs=len(calls))
        if "latentdiff" in med:
            row["latentdiff_over_this"] = med["latentdiff"] / med[label]
            row["paired_ratio_median"] = statistics.median(paired) if paired else None
        row["load_s"] = common.median([x["load_s"] for x in ok[label]])
        row["warmup_s"] = common.median([x["warmup_s"] for x in ok[label]])
        # Medians: a first run that exported or quantized the model (OpenVINO) peaks higher once.
        row["peak_rss_mib"] = common.median([x["child_peak_rss_mib"] for x in ok[label]])
        row["call_peak_rss_mib"] = common.median([x["call_peak_rss_mib"] for x in ok[label]])
        row.update(picture(label, ok))
        rows.append(row)
    return rows


def picture(label: str, ok: dict) -> dict:
    """PSNR of the last image against diffusers' (and a quantized variant's against its fp32 sibling)."""
    engine, variant = CONTENDERS[label][:2]
    out = {"note": PICTURE.get(engine, "")}
    if label != "diffusers" and ok.get("diffusers"):
        out["psnr_vs_diffusers_db"], out["max_px_diff"] = psnr(ok[label][-1]["image"], ok["diffusers"][-1]["image"])
    sibling = label.removesuffix("-" + variant) + ("-fp32" if engine == "openvino" else "-f32")
    if variant and ok.get(sibling):
        out["psnr_vs_fp32_db"] = psnr(ok[label][-1]["image"], ok[sibling][-1]["image"])[0]
    return out


def rescore(args) -> None:
    """The tables of a finished run again (after a change to what rows_for computes), its times untouched."""
    path, images = Path(args.rescore[0]), Path(args.rescore[1])
    data = json.loads(path.read_text())
    meta, done = data["meta"], data["meta"]["runs"]
    runs = {
        k: [x if "error" in x else {**x, "image": str(images / f"{k}-{x['round']}.png")} for x in v]
        for k, v in done.items()
    }
    reasons = {row["engine"]: row.get("note") for row in data["rows"] if not done.get(row["engine"])}
    args.name = path.stem
    write(args, meta["model"], meta, runs, reasons)


def main(argv=None):
    args = parse(argv)
    if args.rescore:
        return rescore(args)
    envs = {**ENVS, **dict(x.split("=", 1) for x in args.python)}
    folder = common.sd15_model(width=args.width, clip_vocab=True)
    model = {"folder": folder, "file": single_file(folder)}
    label = folder.name.removesuffix("-random")
    meta = {**common.machine(), **cpu_description(), "threads_each": args.threads, "omp": args.omp_wait_policy}
    meta.update(model=label, size=args.size, steps=args.steps, guidance=args.guidance, prompt=common.PROMPT)
    reasons = {k: unavailable(k, args, envs) for k in args.engines}
    for k, why in reasons.items():
        if why:
            common.log(f"{k}: {why}")
    live = [k for k in args.engines if not reasons[k]]
    runs = {k: [] for k in args.engines}
    out_dir = Path(tempfile.mkdtemp(prefix="cpu-peers-"))
    common.log(f"{label} {args.size}px {args.steps} steps, {args.threads} threads each: {live}; images in {out_dir}")
    for r in range(args.rounds):
        for k in live[r % len(live) :] + live[: r % len(live)]:
            if runs[k] and "error" in runs[k][0]:
                continue  # it failed in the first round: named with its reason, not retried
            rec = runs[k].append(run_engine(k, args, model, envs, out_dir, r)) or runs[k][-1]
            what = rec.get("error") or f"call {rec['call_s']:.1f}s (load {rec['load_s']:.0f}s)"
            common.log(f"round {r + 1} {k}: {what}; load {rec['load_before']} -> {rec['load_after']}")
        write(args, label, meta, runs, reasons)  # after every round: a cut-short run keeps what it measured


def write(args, label: str, meta: dict, runs: dict, reasons: dict) -> None:
    meta["runs"] = {k: [{x: y for x, y in rec.items() if x != "image"} for rec in v] for k, v in runs.items()}
    meta["rounds_done"] = max((len(v) for v in runs.values()), default=0)
    rows = rows_for(runs, reasons)
    name = args.name or f"cpu_peers-{label}-{args.size}-{args.steps}steps"
    cols = ["engine", "median_s", "min_s", "max_s", "runs", "latentdiff_over_this", "paired_ratio_median"]
    cols += [
        "psnr_vs_diffusers_db",
        "max_px_diff",
        "psnr_vs_fp32_db",
        "peak_rss_mib",
        "call_peak_rss_mib",
        "load_s",
        "warmup_s",
    ]
    cols += ["version", "note"]
    common.write_results(name, rows, cols, meta, notes=notes(meta, runs))


def notes(meta: dict, runs: dict) -> str:
    loads = "; ".join(
        f"{k}: " + ", ".join(f"{x['load_before'][0]}->{x['load_after'][0]}" for x in v) for k, v in runs.items() if v
    )
    return (
        f"Model: {meta['model']} (random weights, SD1.5 layout), {meta['size']}x{meta['size']}, {meta['steps']} "
        f"Euler steps, CFG {meta['guidance']}, batch 1, {meta['threads_each']} threads each, OMP_WAIT_POLICY "
        f"{meta['omp']}. CPU flags: {', '.join(meta['cpu_flags'])}; cgroup CPU quota: {meta['cgroup_cpus']}; "
        f"CPUs allowed: {meta['affinity_cpus']}. median_s: the timed call (prompt encoding, denoising, VAE "
        "decode), warm; latentdiff_over_this: latentdiff's median / this engine's (below 1: latentdiff is "
        "faster); paired_ratio_median: the median of the same ratio within each round. peak_rss_mib: the "
        f"engine process's peak (loading included), median over the rounds. 1-min load average before->after each run: {loads}."
    )


if __name__ == "__main__":
    main()
