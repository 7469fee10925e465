"""channels_last (NHWC) against the default layout in fp32 on the CPU: the UNet's forward (batch 2,
as CFG runs it) and the VAE's decode, timed alternately on the same modules and inputs, warm, with
the largest difference of their outputs (UNet: absolute; decode: in 1/255 pixel steps).

    python benchmarks/channels_last_cpu.py                        # the shipped model, its native size
    python benchmarks/channels_last_cpu.py --case sd15-half       # SD1.5's layout at half width, 256 px
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ARGS = None
if __name__ == "__main__":
    from support.cpu import case_parser

    ap = case_parser(__doc__, repeats=5, steps=False)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--name", help="results file name (default: channels_last_cpu-CASE-CPU)")
    ARGS = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLIs set it, before torch loads OpenMP

from cpu_threads import case, cpu_flags  # noqa: E402
from support import common  # noqa: E402


def main() -> None:
    import torch

    from latentdiff import Pipeline

    if ARGS.threads:
        torch.set_num_threads(ARGS.threads)
    model, label, size, _, _ = case(ARGS.case)
    pipe = Pipeline.from_pretrained(str(model), device="cpu", dtype="fp32")
    unet, vae = pipe.components.unet, pipe.components.vae
    g = torch.Generator().manual_seed(0)
    f = pipe.scale_factor
    latents = torch.randn(2, unet.config.in_channels, size // f, size // f, generator=g)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    t = torch.tensor([500, 500])
    cl = torch.channels_last
    copies = {
        "default": (unet, vae),
        "channels_last": (copy.deepcopy(unet).to(memory_format=cl), copy.deepcopy(vae).to(memory_format=cl)),
    }
    parts = {
        "unet": lambda u, v: u(latents, t, encoder_hidden_states=context).sample,
        "vae_decode": lambda u, v: v.decode(latents[:1, : v.config.latent_channels]).sample,
    }
    rows = []
    with torch.no_grad():
        for part, fn in parts.items():
            outs = {}

            def timed(layout, fn=fn, outs=outs):
                return lambda: outs.__setitem__(layout, fn(*copies[layout]).float())

            calls = {layout: timed(layout) for layout in copies}
            times = common.interleaved(calls, repeats=ARGS.repeats)
            med = {k: common.median(v) for k, v in times.items()}
            diff = (outs["channels_last"] - outs["default"]).abs().max().item()
            rows.append(
                {
                    "part": part,
                    "size": size,
                    "default_s": med["default"],
                    "channels_last_s": med["channels_last"],
                    "ratio": med["channels_last"] / med["default"],
                    "max_abs_diff": diff,
                    "max_diff_px": diff * 127.5 if part == "vae_decode" else None,
                }
            )
            common.log(f"{part}: {rows[-1]}")
    meta = {**common.machine(), "cpu_flags": cpu_flags(), "case": label, "threads": torch.get_num_threads()}
    cpu = "-".join(meta["cpu"].lower().split()[:2]) or "cpu"
    cols = ["part", "size", "default_s", "channels_last_s", "ratio", "max_abs_diff", "max_diff_px"]
    notes = f"CPU flags: {', '.join(meta['cpu_flags'])}; fp32, {meta['threads']} torch threads; ratio: channels_last / default."
    common.write_results(ARGS.name or f"channels_last_cpu-{label}-{cpu}", rows, cols, meta, notes=notes)


if __name__ == "__main__":
    main()
