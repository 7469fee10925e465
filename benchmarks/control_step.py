"""ControlNet's cost on CPU: latentdiff with a `Control` unit vs diffusers'
StableDiffusionControlNetPipeline, same weights, same control image, same scheduler and seeds.

The model is a random-weight SD1.5-architecture folder (`--case sd15`, 860M-parameter UNet, built
once into the benchmark cache) or the tiny test model (`--case tiny`); the ControlNet is
`ControlNetModel.from_unet` of that UNet with its zero convolutions filled with seeded noise (so it
changes the picture). Both pipelines are loaded once, warmed up, then called in rotating order.
Reported: median seconds per call, per step (call / steps: text encoding and decode are a few per
cent of a call), the ratio ours/diffusers, the cost a unit adds over the same call without control
(each library against itself), and how far the two images are apart.

    python benchmarks/control_step.py --case tiny
    python benchmarks/control_step.py --case sd15 --size 256 --steps 4 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: steadier timings on a shared CPU

import numpy as np  # noqa: E402
import torch  # noqa: E402
from support import common  # noqa: E402


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=["tiny", "sd15"], default="tiny")
    ap.add_argument("--size", type=int, default=None, help="image side (default 64 tiny, 256 sd15)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default 8 tiny, 4 sd15)")
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=None, help="timed calls each (default 10 tiny, 3 sd15)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default=None, help="results file name (default control_step-CASE)")
    return ap.parse_args(argv)


def controlnet(unet, factor: int, seed: int = 1):
    """A ControlNet from `unet` (its hint encoder downsampling by the VAE's `factor`) whose zero
    convolutions hold small seeded noise."""
    from diffusers import ControlNetModel

    channels = (16, 32, 96, 256)[: factor.bit_length()]  # diffusers' default for factor 8
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "zero_conv" in name or "controlnet_down_blocks" in name or "controlnet_mid_block" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net.eval()


def control_map(size: int):
    """A fixed edge-like map: a white ring on black."""
    from PIL import Image

    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    ring = ((r > size * 0.25) & (r < size * 0.3)).astype(np.uint8) * 255
    return Image.fromarray(np.stack([ring] * 3, -1))


def contenders(model: Path, net, image, args) -> tuple[dict, dict]:
    from diffusers import StableDiffusionControlNetPipeline

    from latentdiff import Control, Pipeline
    from latentdiff.sampling.loop import make_scheduler

    ours = Pipeline.from_pretrained(model, device="cpu", dtype="fp32")
    ours.progress = False
    ref = StableDiffusionControlNetPipeline.from_pretrained(
        str(model), controlnet=net, safety_checker=None, requires_safety_checker=False
    )
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(ours.components.scheduler_config, "euler")
    common_args = dict(steps=args.steps, guidance=args.guidance, width=args.size, height=args.size, seed=3)
    unit = Control(image, net)
    out: dict = {}

    def run_ours(controls):
        out["ours"] = ours(common.PROMPT, scheduler="euler", controls=controls, **common_args)[0]

    def run_ref(scale):
        out["diffusers"] = ref(
            common.PROMPT,
            image=image,
            controlnet_conditioning_scale=scale,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            height=args.size,
            width=args.size,
            generator=[torch.Generator().manual_seed(3)],
        ).images[0]

    calls = {
        "latentdiff + ControlNet": lambda: run_ours([unit]),
        "diffusers + ControlNet": lambda: run_ref(1.0),
        "latentdiff, no control": lambda: run_ours(None),
    }
    return calls, out


def main(argv=None) -> None:
    args = parse(argv)
    args.size = args.size or (64 if args.case == "tiny" else 256)
    args.steps = args.steps or (8 if args.case == "tiny" else 4)
    args.repeats = args.repeats or (10 if args.case == "tiny" else 3)
    torch.set_num_threads(args.threads)
    model = common.tiny_model() if args.case == "tiny" else common.sd15_model()
    from diffusers import UNet2DConditionModel

    factor = common.native_size(model) // UNet2DConditionModel.load_config(model / "unet")["sample_size"]
    net = controlnet(UNet2DConditionModel.from_pretrained(model / "unet"), factor)
    image = control_map(args.size)
    calls, images = contenders(model, net, image, args)
    with torch.no_grad():
        times = common.interleaved(calls, args.repeats)
    calls["latentdiff + ControlNet"]()
    calls["diffusers + ControlNet"]()
    a, b = (np.asarray(images[k], dtype=np.int16) for k in ("ours", "diffusers"))
    med = {k: common.median(v) for k, v in times.items()}
    base = med["latentdiff, no control"]
    rows = [
        {
            "contender": k,
            "median_s": v,
            "per_step_s": v / args.steps,
            "vs_diffusers_cn": v / med["diffusers + ControlNet"],
        }
        for k, v in med.items()
    ]
    note = (
        f"ControlNet adds {med['latentdiff + ControlNet'] / base:.2f}x to latentdiff's own call; "
        f"max pixel difference ours vs diffusers: {int(np.abs(a - b).max())}/255. "
        f"{args.case}, {args.size}px, {args.steps} steps, CFG {args.guidance}, fp32, {args.threads} threads."
    )
    common.write_results(
        args.name or f"control_step-{args.case}",
        rows,
        ["contender", "median_s", "per_step_s", "vs_diffusers_cn"],
        common.machine(),
        notes=note,
    )
    print(note)


if __name__ == "__main__":
    main()
