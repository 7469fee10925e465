"""Fine-tuning throughput: `latentdiff finetune` (eager and --compile) vs a bare loop on the same
UNet (peft LoRA or all weights, autocast, GradScaler for fp16, torch AdamW, cached latents and text
embeddings: the least a training script can do), LoRA and full, fp16 and bf16.

images/s is measured after `--warmup` optimizer steps (compiling happens there): for latentdiff
from its metrics.jsonl (cumulative images/s at each logged step, turned back into times), for the
bare loop between two device syncs. latentdiff runs its default recipe (full: with EMA; gradients
clipped at 1.0); the bare loop does neither.

    python benchmarks/finetune_cuda.py                                  # SD1.5 512px, batch 4, on CUDA
    python benchmarks/finetune_cuda.py --methods lora --precision fp16 --steps 20
    python benchmarks/finetune_cuda.py --tiny --precision bf16 --steps 2 --warmup 1   # CPU logic check
STATUS: only the CPU smoke run has been run in this repository; no CUDA figure comes from it yet.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from support import common  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "no": torch.float32}


def make_dataset(root: Path, size: int, n: int = 16) -> Path:
    from PIL import Image, ImageDraw

    root.mkdir(parents=True, exist_ok=True)
    colors = ["red", "green", "blue", "yellow", "purple", "orange", "black", "cyan"]
    for i in range(n):
        im = Image.new("RGB", (size, size), "white")
        c = colors[i % len(colors)]
        ImageDraw.Draw(im).ellipse((size // 8 + i, size // 8, size - size // 8, size - size // 8 - i), fill=c)
        im.save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"a {c} circle number {i}")
    return root


def bare_loop(
    model: Path, method: str, precision: str, batch: int, size: int, steps: int, warmup: int, compile: bool, rank: int
) -> float:
    """images/s of the bare loop after `warmup` steps."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from latentdiff.formats.lora_merge import UNET_TARGETS, add_adapters

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = DTYPES[precision]
    unet = UNet2DConditionModel.from_pretrained(str(model / "unet")).to(device)
    sched = DDPMScheduler.from_pretrained(str(model / "scheduler"))
    if method == "lora":
        unet.requires_grad_(False).to(dtype)  # frozen base in the compute dtype, as diffusers' script
        add_adapters(unet, rank, UNET_TARGETS)
        for p in unet.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if compile:
        unet.compile()
    unet.train()
    hw = size // 8
    latents = torch.randn(batch, unet.config.in_channels, hw, hw, device=device)
    text = torch.randn(batch, 77, unet.config.cross_attention_dim, device=device)
    t0 = None
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        noise = torch.randn_like(latents)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), device=device)
        noisy = sched.add_noise(latents, noise, t)
        with torch.autocast(device.type, dtype=dtype, enabled=precision != "no"):
            pred = unet(noisy, t, encoder_hidden_states=text).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch / (time.perf_counter() - t0)


def ours(
    model: Path,
    data: Path,
    out: Path,
    method: str,
    precision: str,
    batch: int,
    size: int,
    steps: int,
    warmup: int,
    compile: bool,
    rank: int,
) -> float:
    """images/s of `latentdiff finetune` between the end of step `warmup` and the last step."""
    from latentdiff.training.config import FinetuneConfig
    from latentdiff.training.loop import finetune

    shutil.rmtree(out, ignore_errors=True)
    cfg = FinetuneConfig(
        dataset=str(data),
        model=str(model),
        out=str(out),
        method=method,
        batch_size=batch,
        resolution=size,
        max_steps=warmup + steps,
        mixed_precision=precision,
        compile=compile,
        lora_rank=rank,
        log_every=1,
        checkpoint_every=10**9,
    )
    finetune(cfg)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    at = {r["step"]: r["step"] * batch / r["images_per_s"] for r in rows if "images_per_s" in r}  # seconds so far
    last = max(at)
    return (last - warmup) * batch / (at[last] - at[warmup])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tiny test model at 64px (CPU logic check)")
    ap.add_argument("--size", type=int, help="default: 512 (SD1.5), 64 (--tiny)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--methods", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    ap.add_argument("--precision", nargs="+", default=["fp16", "bf16"], choices=list(DTYPES))
    ap.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=10, help="untimed optimizer steps first (compiling happens here)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--no-compile", action="store_true", help="skip the --compile contenders")
    ap.add_argument("--name", help="results file name")
    args = ap.parse_args(argv)

    model, label = (common.tiny_model(), "tiny-sd1") if args.tiny else (common.sd15_model(), "sd15-random")
    size = args.size or (64 if args.tiny else 512)
    work = Path(tempfile.mkdtemp(prefix="ld-ft-bench-"))
    data = make_dataset(work / "data", size)
    meta = common.machine()
    meta.update({"model": label, "size": size, "batch": args.batch, "steps": args.steps, "warmup": args.warmup})
    rows = []
    for method in args.methods:
        for precision in args.precision:
            run = dict(
                method=method,
                precision=precision,
                batch=args.batch,
                size=size,
                steps=args.steps,
                warmup=args.warmup,
                rank=args.rank,
            )
            base = bare_loop(model, compile=False, **run)
            found = {"bare loop": base}
            for compile in [False] if args.no_compile else [False, True]:
                name = "latentdiff" + (" --compile" if compile else "")
                found[name] = ours(model, data, work / "out", compile=compile, **run)
            for n, v in found.items():
                rows.append(
                    {
                        "method": method,
                        "precision": precision,
                        "contender": n,
                        "images_per_s": v,
                        "vs_bare_loop": v / base,
                    }
                )
                common.log(f"{method} {precision} {n}: {v:.2f} images/s ({v / base:.2f}x)")
    shutil.rmtree(work, ignore_errors=True)
    name = args.name or f"finetune_cuda-{label}-{size}-b{args.batch}-{'cuda' if torch.cuda.is_available() else 'cpu'}"
    common.write_results(name, rows, ["method", "precision", "contender", "images_per_s", "vs_bare_loop"], meta)


if __name__ == "__main__":
    main()
