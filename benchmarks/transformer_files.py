"""Transformer files on this CPU: an SD 3.5 medium transformer at its released width (24 heads x 64,
the dual-attention block, the released text widths) with 2 blocks instead of 24 and a 96-side
position table instead of 384, written as bf16 safetensors, fp8 (e4m3fn) safetensors, GGUF Q8_0 and
GGUF Q4_0, then each read back as `latentdiff --model FILE` reads it (formats/transformer_file.py):
file size, seconds to load, bytes the transformer holds in memory, seconds per model call (one
256 px image with CFG, fp32 compute) and the call's largest difference from the fp32 weights'.

    python benchmarks/transformer_files.py

Weight bytes scale with the parameter count (SD 3.5 medium: 2.5 B; large: 8.1 B; Flux.1: 11.9 B);
timings on a shared machine are upper bounds.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def held_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def main() -> None:
    from diffusers import SD3Transformer2DModel
    from safetensors.torch import save_file

    from latentdiff.families.sd3 import SD3Call, SD3Context
    from latentdiff.formats.gguf_file import compute_in, write_gguf
    from latentdiff.formats.transformer_file import _transformer_part, build_transformer, read_transformer
    from latentdiff.formats.transformer_keys import to_original
    from latentdiff.sampling.model_call import Inputs

    torch.manual_seed(0)
    model = SD3Transformer2DModel(
        num_layers=2, num_attention_heads=24, caption_projection_dim=1536, qk_norm="rms_norm",
        dual_attention_layers=(0,), pos_embed_max_size=96,
    ).eval()  # fmt: skip
    original = to_original(model.state_dict(), "sd3")
    x = torch.randn(2, 16, 32, 32)
    context = SD3Context(torch.randn(2, 77 + 256, 4096), torch.randn(2, 2048))
    t = torch.tensor(500.0)
    with torch.no_grad():
        want = SD3Call(model)(x, t, Inputs(context))
    print(
        f"transformer: {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters; load avg {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as d:
        files = {"bf16": Path(d) / "bf16.safetensors", "fp8": Path(d) / "fp8.safetensors"}
        save_file({k: v.to(torch.bfloat16).contiguous() for k, v in original.items()}, str(files["bf16"]))
        save_file({k: v.to(torch.float8_e4m3fn).contiguous() for k, v in original.items()}, str(files["fp8"]))
        for q in ("Q8_0", "Q4_0"):
            files[q] = write_gguf(Path(d) / f"{q}.gguf", "sd3", original, q)
        print("file | MB on disk | load s | MB held | s per call | max |diff| vs fp32")
        for name, path in files.items():
            start = time.perf_counter()
            family, sd, config = read_transformer(path)
            loaded = build_transformer(family, _transformer_part(sd), config, path)
            loaded = loaded.float()  # the CPU's compute dtype (GGUF blocks stay uint8)
            compute_in(loaded, torch.float32)
            load_s = time.perf_counter() - start
            with torch.no_grad():
                start = time.perf_counter()
                got = SD3Call(loaded)(x, t, Inputs(context))
                call_s = time.perf_counter() - start
            mb = path.stat().st_size / 2**20
            diff = (got - want).abs().max().item()
            print(f"{name} | {mb:.0f} | {load_s:.1f} | {held_bytes(loaded) / 2**20:.0f} | {call_s:.2f} | {diff:.3g}")


if __name__ == "__main__":
    main()
