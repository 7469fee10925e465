"""Per-step cost of a super-resolution stage's architecture, before anything is trained.

Builds the UNet of an upscaler architecture YAML (default configs/models/emoji-sr.yaml) and the VAE
of a train-vae YAML (default configs/vae/emoji-sr.yaml) with random weights (the cost does not
depend on the values), then times one UNet call at batch 1 (guidance 1) and 2 (CFG), and one VAE
decode, at the stage's output size, beside the same calls of the shipped base model (its UNet at
batch 2, its VAE), alternating them; prints GFLOPs (torch.utils.flop_counter), min and median
seconds over --repeats after one warm-up call, and each stage's compute per image at its default
steps and guidance. On a busy CPU the absolute times swing; their ratio to the base's holds better.

    python benchmarks/upscaler_step.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import yaml


def gflops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def calls(unet, vae, latent: int, tokens: int, labels: bool) -> dict:
    """{name: callable} for one UNet call at batch 1 and 2 and one VAE decode at batch 1."""
    out, width = {}, unet.config.cross_attention_dim
    for b in (1, 2):
        x = torch.randn(b, unet.config.in_channels, latent, latent)
        ctx, t = torch.randn(b, tokens, width), torch.tensor([500] * b)
        extra = {"class_labels": torch.tensor([20] * b)} if labels else {}
        out[f"UNet call, batch {b}"] = lambda x=x, ctx=ctx, t=t, extra=extra: unet(x, t, ctx, **extra)
    z = torch.randn(1, vae.config.latent_channels, latent, latent)
    out["VAE decode, batch 1"] = lambda: vae.decode(z)
    return out


def stage(rows: dict, defaults: dict) -> float:
    """Seconds per image of UNet calls and decode at the stage's default steps and guidance."""
    b = 1 if defaults.get("guidance", 1.0) == 1.0 else 2
    return defaults.get("steps", 20) * rows[f"UNet call, batch {b}"][1] + rows["VAE decode, batch 1"][1]


@torch.no_grad()
def main(argv=None) -> None:
    import json

    from diffusers import AutoencoderKL, UNet2DConditionModel

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="configs/models/emoji-sr.yaml")
    p.add_argument("--vae", default="configs/vae/emoji-sr.yaml")
    p.add_argument("--base", default="checkpoints/emoji", help="the base model (reference)")
    p.add_argument("--low-res", type=int, default=64, help="size of the low-res image = latent size")
    p.add_argument("--tokens", type=int, default=32, help="text window of the base model's tokenizer")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    arch = yaml.safe_load(open(args.arch))
    unet = UNet2DConditionModel(**arch["unet"]).eval()
    vae = AutoencoderKL(**yaml.safe_load(open(args.vae))["vae"]).eval()
    base_unet = UNet2DConditionModel.from_pretrained(f"{args.base}/unet").float().eval()
    base_vae = AutoencoderKL.from_pretrained(f"{args.base}/vae").float().eval()
    sr = calls(unet, vae, args.low_res, args.tokens, True)
    base = calls(base_unet, base_vae, base_unet.config.sample_size, args.tokens, False)
    samples = {("sr", k): [] for k in sr} | {("base", k): [] for k in base}
    for i in range(args.repeats + 1):  # alternating, the first round a warm-up
        for (who, name), fn in zip(samples, [*sr.values(), *base.values()]):
            t0 = time.perf_counter()
            fn()
            if i:
                samples[(who, name)].append(time.perf_counter() - t0)
    rows = {k: (min(v), statistics.median(v)) for k, v in samples.items()}
    print(
        f"{args.threads} thread(s), load average {open('/proc/loadavg').read().split()[0]}; SR UNet "
        f"{sum(q.numel() for q in unet.parameters()) / 1e6:.2f}M parameters at {args.low_res}x{args.low_res} latents"
    )
    print("| model | what | GFLOP | min s | median s |\n|---|---|---|---|---|")
    for (who, name), (lo, med) in rows.items():
        print(f"| {who} | {name} | {gflops((sr if who == 'sr' else base)[name]):.2f} | {lo:.4f} | {med:.4f} |")
    base_defaults = json.load(open(f"{args.base}/latentdiff.json"))
    t_sr = stage({n: v for (w, n), v in rows.items() if w == "sr"}, arch.get("defaults", {}))
    t_base = stage({n: v for (w, n), v in rows.items() if w == "base"}, base_defaults)
    print(f"per image at the defaults (medians): SR stage {t_sr:.2f} s, base {t_base:.2f} s, ratio {t_sr / t_base:.2f}")


if __name__ == "__main__":
    main()
