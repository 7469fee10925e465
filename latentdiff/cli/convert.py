"""`latentdiff convert SRC DST`: a diffusers folder <-> a single-file checkpoint (A1111 layout)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="diffusers folder <-> single-file checkpoint (A1111 layout)",
        description="Convert a diffusers model folder to one .safetensors file in the original "
        "(AUTOMATIC1111 / civitai) layout, or such a file to a diffusers folder.",
    )
    p.add_argument("src", help="a model folder, or a single-file checkpoint")
    p.add_argument("dst", help="the file (.safetensors) or folder to write; never overwritten")
    p.add_argument("--dtype", help="store weights as fp32, fp16 or bf16 (default: as they are)")
    p.add_argument(
        "--allow-pickle", action="store_true", help="allow reading a pickle (.ckpt) source, with weights_only=True"
    )
    p.add_argument(
        "--components",
        metavar="DIR",
        help="for a transformer file (Flux.1, SD 3/3.5, Chroma, FLUX.2, Qwen-Image, Z-Image) as SRC: the diffusers folder its text encoders, "
        "tokenizers and VAE come from",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.formats.convert import convert

    dst = convert(args.src, args.dst, allow_pickle=args.allow_pickle, dtype=args.dtype, components=args.components)
    print(dst, flush=True)
    return 0
