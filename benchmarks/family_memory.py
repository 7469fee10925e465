"""Peak RSS and seconds per step of each transformer family on this CPU, and how they scale to the release.

Each family runs in its own process (so its peak RSS is its own), end to end through
latentdiff.Pipeline (text encoding, the loop, the decode): the family's tiny test model
(families/*_tiny.py: tiny text encoders and VAE) with its transformer rebuilt at a reduced size:
the released head width (128; SD3's 64) with a quarter of the released heads, one block of each kind
(Flux.1/Chroma/FLUX.2: one double- and one single-stream block; Qwen-Image: one; Z-Image: one main,
one image- and one text-refiner block; SD 3.5 medium: one joint block and the last, context-only one).
Random weights, fp32, 1 image of --tokens image tokens (the tiny VAEs' factor is not the release's,
so the side is chosen for the token count) beside the family's own text length.

Scaling to the release (printed per family): weights are the published parameter counts times the
dtype's bytes (RELEASED below); a step is the measured block times times the released block counts,
each block's time split by a FLOP model into its linear layers (2 x tokens x block parameters:
x r^2 for r = released width / width here) and its attention (4 x tokens^2 x width: x r), then
to a 1024x1024 image's tokens (linear x N'/N, attention x (N'/N)^2). Timings on a shared machine
are upper bounds: read the load average printed with them.

    python benchmarks/family_memory.py                  # every family, a markdown table
    python benchmarks/family_memory.py --family flux    # one family, one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from benchmarks.flux_cpu import peak_rss_gib  # noqa: E402

GIB = 1024**3
FLUX_LIKE = dict(num_attention_heads=6, attention_head_dim=128, num_layers=1, num_single_layers=1)
# family: (tiny variant, transformer overrides, {block name: (module list, index)}, released block counts,
#          released transformer width, published parameter counts in billions: transformer, text encoders, VAE)
FAMILIES = {
    "flux": (
        "flux-dev", dict(FLUX_LIKE, axes_dims_rope=(16, 56, 56)),
        {"double": ("transformer_blocks", 0), "single": ("single_transformer_blocks", 0)},
        {"double": 19, "single": 38}, 3072, (11.90, 4.76 + 0.12, 0.08),
    ),
    "chroma": (
        "chroma", dict(FLUX_LIKE, axes_dims_rope=(16, 56, 56)),
        {"double": ("transformer_blocks", 0), "single": ("single_transformer_blocks", 0)},
        {"double": 19, "single": 38}, 3072, (8.90, 4.76, 0.08),
    ),
    "flux2": (
        "flux2-klein", dict(FLUX_LIKE, axes_dims_rope=(32, 32, 32, 32)),
        {"double": ("transformer_blocks", 0), "single": ("single_transformer_blocks", 0)},
        {"double": 5, "single": 20}, 3072, (3.88, 4.02, 0.08),
    ),
    "qwen-image": (
        "qwen-image", dict(num_attention_heads=6, attention_head_dim=128, num_layers=1, axes_dims_rope=(16, 56, 56)),
        {"block": ("transformer_blocks", 0)}, {"block": 60}, 3072, (20.43, 8.29, 0.13),
    ),
    "z-image": (
        "z-image", dict(dim=1024, n_heads=8, n_kv_heads=8, n_layers=1, n_refiner_layers=1, axes_dims=[32, 48, 48]),
        {"block": ("layers", 0), "image_refiner": ("noise_refiner", 0), "text_refiner": ("context_refiner", 0)},
        {"block": 30, "image_refiner": 2, "text_refiner": 2}, 3840, (6.15, 4.02, 0.08),
    ),
    "sd3": (
        "sd3.5-medium", dict(num_attention_heads=6, attention_head_dim=64, caption_projection_dim=384, num_layers=2),
        {"block": ("transformer_blocks", 0), "last": ("transformer_blocks", 1)},
        {"block": 23, "last": 1}, 1536, (2.47, 0.12 + 0.69 + 4.76, 0.08),
    ),
}  # fmt: skip


def build(name: str):
    """The family's tiny pipeline with its transformer rebuilt at the reduced size, and its blocks."""
    from latentdiff import Pipeline
    from latentdiff.families.registry import family_with_variant
    from latentdiff.models.components import Components

    variant, overrides, blocks, *_ = FAMILIES[name]
    parts = family_with_variant(variant).tiny(variant, seed=0)
    tiny = parts["unet"]
    torch.manual_seed(0)
    parts["unet"] = type(tiny).from_config({**dict(tiny.config), **overrides}).eval()
    pipe = Pipeline(Components(defaults={}, **parts), torch.device("cpu"), torch.float32)
    pipe.progress = False
    return pipe, {k: getattr(pipe.components.unet, attr)[i] for k, (attr, i) in blocks.items()}


def side_for(pipe, tokens: int) -> int:
    """The image side in pixels that makes `tokens` image tokens for this model's VAE and patching."""
    step = pipe.family.size_step(pipe.components, pipe.scale_factor)
    return int(round(tokens**0.5)) * step


def measure(name: str, tokens: int, steps: int) -> dict:
    pipe, blocks = build(name)  # the text's tokens: as the family's conditioning makes them (padded or not)
    side = side_for(pipe, tokens)
    times, seen = {k: [] for k in blocks}, []
    first = next(iter(blocks.values()))
    first.register_forward_pre_hook(
        lambda m, a, kw: seen.append(tokens_in(a, kw, width_of(pipe.components.unet))), with_kwargs=True
    )
    for key, block in blocks.items():
        block.register_forward_pre_hook(lambda m, a, k=key: times[k].append(-time.perf_counter()))
        block.register_forward_hook(lambda m, a, o, k=key: times[k].__setitem__(-1, times[k][-1] + time.perf_counter()))
    ends = []
    # one image, no CFG batch (Z-Image's guidance g guides as g + 1: 0 is none)
    kwargs = dict(steps=steps, width=side, height=side, seed=0, guidance=0.0 if name == "z-image" else 1.0)
    pipe("a red apple", **kwargs)  # warm-up
    for v in times.values():
        v.clear()
    pipe("a red apple", callback=lambda i, n, x: ends.append(time.perf_counter()), **kwargs)
    per_step = [b - a for a, b in zip(ends, ends[1:])]  # between steps: no text encoding, no decode
    unet = pipe.components.unet
    return {
        "family": name,
        "side": side,
        "image_tokens": tokens,
        "text_tokens": seen[-1] - tokens,
        "width": width_of(unet),
        "transformer_params_m": sum(p.numel() for p in unet.parameters()) / 1e6,
        "block_params_m": {k: sum(p.numel() for p in b.parameters()) / 1e6 for k, b in blocks.items()},
        "s_per_step": median(per_step),
        "s_block": {k: median(v) for k, v in times.items()},
        "peak_rss_gib": peak_rss_gib(),
        "load": os.getloadavg()[0],
    }


def median(values: list) -> float:
    values = sorted(values)
    return (values[(len(values) - 1) // 2] + values[len(values) // 2]) / 2


def tokens_in(args, kwargs, width: int) -> int:
    """The tokens a block attends over: its (B, N, width) inputs' N, image and text together (not
    Chroma's per-block modulation vectors, `temb`, which have the width too)."""
    found = [*args, *(v for k, v in kwargs.items() if k != "temb")]
    return sum(
        t.shape[1]
        for t in found
        if torch.is_tensor(t) and t.is_floating_point() and t.ndim == 3 and t.shape[-1] == width
    )


def width_of(unet) -> int:
    c = unet.config
    return int(c.get("dim") or c["num_attention_heads"] * c["attention_head_dim"])


def scaled(row: dict, released_tokens: int = 4096) -> dict:
    """The release's step time at this size and at a 1024x1024 image, and its weights."""
    _, _, _, counts, width, params = FAMILIES[row["family"]]
    r = width / row["width"]
    n = row["image_tokens"] + row["text_tokens"]
    n2 = released_tokens + row["text_tokens"]
    here, big, flops = 0.0, 0.0, 0.0
    for k, t in row["s_block"].items():
        lin, att = 2 * n * row["block_params_m"][k] * 1e6, 4 * n * n * row["width"]
        share = att / (lin + att)
        released = t * ((1 - share) * r * r + share * r)
        here += counts[k] * released
        big += counts[k] * released * ((1 - share) * n2 / n + share * (n2 / n) ** 2)
        flops += counts[k] * (lin * r * r + att * r)
    rest = row["s_per_step"] - sum(row["s_block"].values())
    rate = sum(
        (2 * n * row["block_params_m"][k] * 1e6 + 4 * n * n * row["width"]) / t for k, t in row["s_block"].items()
    )
    return {
        "gflops_per_s": rate / len(row["s_block"]) / 1e9,
        "released_tflop_per_step": flops / 1e12,
        "released_s_per_step": here + rest,
        "released_s_per_step_1024": big + rest,
        "weights_bf16_gib": sum(params) * 1e9 * 2 / GIB,
        "largest_bf16_gib": max(params) * 1e9 * 2 / GIB,
    }


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = next((int(ln.split()[1]) for ln in open("/proc/meminfo") if ln.startswith("MemTotal")), 0) * 1024
    return f"{cpu}, {os.cpu_count()} cores, {mem / GIB:.0f} GiB RAM, torch {torch.__version__}"


def table(rows: list[dict]) -> str:
    out = [
        f"Machine: {machine()}; one process per family, fp32, {torch.get_num_threads()} threads; load average "
        f"{min(r['load'] for r in rows):.0f}-{max(r['load'] for r in rows):.0f} during the runs (timings are upper bounds).",
        "",
        "| family | width here / released | tokens (image + text) | transformer here | peak RSS | s/step here "
        "| GFLOP/s here | released: TFLOP/step | released: s/step same tokens | released: s/step 1024x1024 "
        "| released weights bf16 (largest part) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        s = scaled(row)
        released_width = FAMILIES[row["family"]][4]
        out.append(
            f"| {row['family']} | {row['width']} / {released_width} | {row['image_tokens']} + {row['text_tokens']} "
            f"| {row['transformer_params_m']:.0f} M | {row['peak_rss_gib']:.2f} GiB | {row['s_per_step']:.2f} "
            f"| {s['gflops_per_s']:.0f} | {s['released_tflop_per_step']:.1f} | {s['released_s_per_step']:.0f} | {s['released_s_per_step_1024']:.0f} "
            f"| {s['weights_bf16_gib']:.1f} GiB ({s['largest_bf16_gib']:.1f}) |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=tuple(FAMILIES), help="one family, in this process (JSON line)")
    parser.add_argument("--tokens", type=int, default=256, help="image tokens (default 256: a 256x256 image)")
    parser.add_argument("--steps", type=int, default=3, help="at least 2: a step is timed between two steps' ends")
    parser.add_argument(
        "--out", type=Path, help="also write the table to this markdown file (the rows: .json beside it)"
    )
    parser.add_argument("--rows", type=Path, help="only the table, from the rows a run wrote (.json)")
    args = parser.parse_args()
    if args.family:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
        print(json.dumps(measure(args.family, args.tokens, args.steps)))
        return
    rows = json.loads(args.rows.read_text()) if args.rows else []
    for name in [] if args.rows else FAMILIES:
        cmd = [sys.executable, __file__, "--family", name, "--tokens", str(args.tokens), "--steps", str(args.steps)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    text = table(rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
