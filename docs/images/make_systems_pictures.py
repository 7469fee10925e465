"""The pictures of docs/systems.md: each stage's output of the three systems on the emoji models.

    PYTHONPATH=. python docs/images/make_systems_pictures.py --sr SR_STAGE --decoder DECODER --prior PRIOR \
        --dataset data/emoji

SR_STAGE is an exported pixel SR stage (`latentdiff export RUN --out DIR`), DECODER an unCLIP decoder
(`finetune --method unclip`), PRIOR a prior (`finetune --method prior`). Writes docs/images/*.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from latentdiff import Pipeline
from latentdiff.families.unclip import encode_pictures, prior_embeddings
from latentdiff.training.emoji.prior_eval import load_scored_prior

OUT = Path(__file__).resolve().parent
NAME, SEED = "cat face", 0


def save(image: Image.Image, name: str) -> None:
    """A small PNG: a 256-colour palette (no dithering) is near-lossless on emoji and a third of the bytes."""
    image.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(OUT / name, optimize=True)


def latent_picture(latents: torch.Tensor) -> Image.Image:
    """The first three of the latent's channels, each stretched to [0, 255], at 4x (nearest)."""
    x = latents[0, :3].float()
    lo, hi = x.amin((1, 2), keepdim=True), x.amax((1, 2), keepdim=True)
    u8 = ((x - lo) / (hi - lo + 1e-8) * 255).round().byte().permute(1, 2, 0).numpy()
    im = Image.fromarray(u8)
    return im.resize((im.width * 4, im.height * 4), Image.NEAREST)


def latent_diffusion(sr: str) -> None:
    pipe = Pipeline.from_pretrained(None)
    pipe.progress = False
    seen = []
    image = pipe(NAME, seed=SEED, callback=lambda step, total, latents: seen.append(latents))[0]
    save(latent_picture(seen[-1]), "ld-latent.png")
    save(image, "ld-image.png")
    save(image.resize((128, 128), Image.BICUBIC), "if-bicubic-128.png")
    up = pipe(NAME, seed=SEED, upscaler=sr)[0] if sr else None
    if up is not None:
        save(up, "if-sr-128.png")


def dalle2(decoder: str, prior: str, dataset: str) -> None:
    pipe = Pipeline.from_pretrained(decoder)
    pipe.progress = False
    save(pipe(NAME, seed=SEED, prior=prior)[0], "dalle-decoder.png")
    parts, encoder, processor = load_scored_prior(prior)
    rows = [json.loads(line) for line in (Path(dataset) / "metadata.jsonl").read_text().splitlines() if line.strip()]
    files = [Path(dataset) / r["file_name"] for r in rows]
    renders = torch.cat([encode_pictures(encoder, processor, [Image.open(f).convert("RGB") for f in files[i : i + 256]])
                         for i in range(0, len(files), 256)])  # fmt: skip
    pred = prior_embeddings(parts, [NAME], 25, 4.0, [torch.Generator().manual_seed(SEED)], True)
    sims = F.normalize(pred.float(), dim=-1) @ F.normalize(renders.float(), dim=-1).T
    best = int(sims.argmax())
    save(Image.open(files[best]).convert("RGB"), "dalle-prior-nearest.png")
    own = next(i for i, r in enumerate(rows) if r["text"] == NAME)
    save(Image.open(files[own]).convert("RGB"), "dalle-render.png")
    variation = pipe("", seed=SEED, variations=str(files[own]))[0]
    save(variation, "dalle-variation.png")
    print(f"prior: nearest render {rows[best]['text']!r} (cosine {sims[0, best]:.3f}); own {sims[0, own]:.3f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sr")
    p.add_argument("--decoder")
    p.add_argument("--prior")
    p.add_argument("--dataset", default="data/emoji")
    args = p.parse_args()
    latent_diffusion(args.sr)
    if args.decoder:
        dalle2(args.decoder, args.prior, args.dataset)


if __name__ == "__main__":
    main()
