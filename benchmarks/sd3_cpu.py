"""SD 3.5 on this CPU: seconds per denoising step and peak RSS, and how they scale to the release.

Two cases (random weights, nothing downloaded):

- `tiny`: the tests' tiny SD 3.5 folder through latentdiff.Pipeline end to end (three text
  encoders, loop with CFG, decode); seconds per step from the step callback, peak RSS.
- `reduced`: SD3Transformer2DModel at a released width (large: 38 heads x 64; medium: 24 x 64,
  with its dual-attention block) and the released text widths (joint 4096 over 77 CLIP + 256 T5
  tokens, pooled 2048), but 3 blocks instead of 38 (large) or 24 (medium), called as the loop calls
  it at --size, one image with CFG (a batch of 2). Forward hooks time each block (the first a
  joint block, for medium a dual-attention one; the second a joint block; the last a
  context-pre-only one, as every release ends), so a released step is estimated as the released
  block counts times those plus the rest (benchmarks/flux_cpu.scaled_to_release); weights likewise.

    python benchmarks/sd3_cpu.py --case tiny
    python benchmarks/sd3_cpu.py --case reduced --variant large --size 256

Timings on a shared machine are upper bounds: read the load average printed with them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from benchmarks.flux_cpu import report, scaled_to_release, tiny  # noqa: E402

# stabilityai/stable-diffusion-3.5-large and -medium transformer/config.json: heads, blocks, dual-attention blocks.
RELEASED = {"large": (38, 38, 0), "medium": (24, 24, 13)}


def reduced(args) -> dict:
    from diffusers import SD3Transformer2DModel

    from latentdiff.families.sd3 import SD3Call, SD3Context
    from latentdiff.sampling.model_call import Inputs

    heads, n_blocks, n_dual = RELEASED[args.variant]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    arch = dict(dual_attention_layers=(0,), pos_embed_max_size=384) if n_dual else dict(pos_embed_max_size=192)
    model = SD3Transformer2DModel(
        num_layers=3, num_attention_heads=heads, caption_projection_dim=heads * 64, qk_norm="rms_norm", **arch
    )
    model = model.to(dtype).eval()
    # block 0: dual-attention (medium) or joint; block 1: joint; block 2: the last, context-pre-only one
    names = ("dual" if n_dual else "joint0", "joint", "last")
    blocks = dict(zip(names, model.transformer_blocks))
    side = args.size // 8  # the released VAE's factor
    x = torch.randn(2, 16, side, side, dtype=dtype)  # CFG: the unconditional row and the prompt's
    context = SD3Context(torch.randn(2, 77 + 256, 4096, dtype=dtype), torch.randn(2, 2048, dtype=dtype))
    call, t = SD3Call(model), torch.tensor(500.0)
    # the released blocks: n_dual dual-attention ones, the others joint, the last context-pre-only
    counts = {names[0]: n_dual or 1, "joint": n_blocks - 1 - (n_dual or 1), "last": 1}
    timed = scaled_to_release(model, blocks, counts, lambda: call(x, t, Inputs(context)), args.steps, dtype)
    return {"tokens": (side // 2) ** 2 + 77 + 256, **timed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("tiny", "reduced"), default="tiny")
    parser.add_argument("--variant", choices=tuple(RELEASED), default="large", help="the released width (reduced)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (tiny 64, reduced 256)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    args.size = args.size or (64 if args.case == "tiny" else 256)
    out = tiny(args, "sd3.5-medium") if args.case == "tiny" else reduced(args)
    report(args, out, **({"variant": args.variant} if args.case == "reduced" else {}))


if __name__ == "__main__":
    main()
