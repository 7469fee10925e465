"""`eval-emoji DATASET --prior PRIOR [--model DECODER]`: how well the DALL-E 2 path works on emoji.

The prior (a Kandinsky 2.2 prior folder, as `finetune --method prior` saves one) samples each held-out
name's CLIP image embedding; the truth is its render's embedding by the image encoder the prior
carries. Scored, per generation seed and averaged: the cosine between predicted and true (DALL-E 2,
Ramesh et al. 2022, section 5.1), and the top-1 retrieval of the predicted embedding among the
held-out renders' embeddings and among every render of the dataset. Two baselines put the figures in
scale: the caption's CLIP text embedding used as the image embedding (no prior: what the CLIP pair
alone gives), and the mean training image embedding (a prior that ignores the text).

With `--model DECODER` (a Stable unCLIP decoder), the names are also drawn through prior and decoder
and scored by nearest-reference top-1 exactly as `eval-emoji` scores a direct text-to-image model, so
the two designs compare at the same size, seeds and names.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from latentdiff.errors import UsageError
from latentdiff.families.unclip import PRIOR_GUIDANCE, PRIOR_STEPS, encode_pictures, prior_embeddings, prior_text
from latentdiff.models.assemble import load_prior
from latentdiff.models.unclip_parts import check_prior_folder
from latentdiff.training.emoji.evaluate import (
    check_writable,
    evaluate,
    heldout_rows,
    load_image_of,
    load_pipeline,
    load_references,
    load_rows,
    progress_bar,
    table,
)
from latentdiff.training.image_tower import image_tower

BATCH = 64


def load_scored_prior(folder: str) -> tuple[dict, object, object]:
    """(the prior's parts, its image encoder, that encoder's processor); the truth needs the encoder
    a Kandinsky 2.2 prior folder carries (a Karlo folder has none)."""
    path = Path(folder)
    check_prior_folder(path, "--prior")
    if not (path / "image_encoder" / "config.json").is_file():
        raise UsageError(f"--prior {folder} has no image_encoder/: the true image embeddings come from the prior's own")
    encoder, processor = image_tower(path / "image_encoder", False, (path / "image_processor",))
    return load_prior(path), encoder.float().eval(), processor


@torch.no_grad()
def _image_embeds(encoder, processor, dataset: Path, rows: list[dict], bar=None) -> torch.Tensor:
    """Unit-length CLIP image embeddings (N, D) of the rows' renders."""
    out = []
    for i in range(0, len(rows), BATCH):
        chunk = rows[i : i + BATCH]
        images = [load_image_of(dataset / r["file_name"], "emoji image") for r in chunk]
        out.append(encode_pictures(encoder, processor, images).float())
        if bar is not None:
            bar.update(len(chunk))
    return F.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def _predicted(parts: dict, names: list[str], steps: int, guidance: float, seed: int) -> torch.Tensor:
    """Unit-length sampled image embeddings (N, D); name k of a batch draws from seed + k, as generate does."""
    out = []
    for i in range(0, len(names), BATCH):
        chunk = names[i : i + BATCH]
        gens = [torch.Generator("cpu").manual_seed(seed + k) for k in range(len(chunk))]
        out.append(prior_embeddings(parts, chunk, steps, guidance, gens, True).float())
    return F.normalize(torch.cat(out), dim=-1)


def embedding_scores(pred: torch.Tensor, true: torch.Tensor, gallery: torch.Tensor) -> dict:
    """Cosine of each row of `pred` with its row of `true` (unit rows), and top-1 retrieval: row k's
    nearest among `true` (the held-out renders), and among `gallery` (every render; true's rows first)."""
    cos = (pred * true).sum(-1)
    own = torch.arange(len(pred))
    return {
        "cosine": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "top1_heldout": float(((pred @ true.T).argmax(1) == own).float().mean()),
        "top1_all": float(((pred @ gallery.T).argmax(1) == own).float().mean()),
    }


def score_prior(parts: dict, encoder, processor, dataset: Path, rows, names_idx, steps, guidance, seeds) -> dict:
    """The module docstring's figures for the rows `names_idx` (held-out), with both baselines."""
    names = [rows[i]["text"] for i in names_idx]
    rest = [r for i, r in enumerate(rows) if i not in set(names_idx)]
    with progress_bar(len(rows), "eval-emoji: image embeddings") as bar:
        true = _image_embeds(encoder, processor, dataset, [rows[i] for i in names_idx], bar)
        others = _image_embeds(encoder, processor, dataset, rest, bar)
    gallery = torch.cat([true, others])
    train_mean = F.normalize(others[[r.get("split") != "heldout" for r in rest]].mean(0, keepdim=True), dim=-1)
    per_seed = {}
    for seed in seeds:
        per_seed[str(seed)] = embedding_scores(_predicted(parts, names, steps, guidance, seed), true, gallery)
        print(f"eval-emoji: prior seed {seed}: {_line(per_seed[str(seed)])}", file=sys.stderr)
    text = F.normalize(
        torch.cat([prior_text(parts, names[i : i + BATCH])[0] for i in range(0, len(names), BATCH)]), dim=-1
    )
    return {
        "n": len(names),
        "gallery": len(gallery),
        "prior_steps": steps,
        "prior_guidance": guidance,
        "seeds": list(seeds),
        "prior": {k: sum(v[k] for v in per_seed.values()) / len(per_seed) for k in next(iter(per_seed.values()))},
        "per_seed": per_seed,
        "text_embedding_baseline": embedding_scores(text.float(), true, gallery),
        "mean_embedding_baseline": embedding_scores(train_mean.expand_as(true), true, gallery),
    }


def _line(v: dict) -> str:
    return (
        f"cosine {v['cosine']:.3f}, top-1 {v['top1_heldout']:.3f} among the held-out renders, "
        f"{v['top1_all']:.3f} among all"
    )


class _ThroughPrior:
    """The decoder pipeline called with the prior's settings added to every call (evaluate's `pipe`)."""

    def __init__(self, pipe, **options):
        self.pipe, self.options = pipe, options

    def __call__(self, *args, **kwargs):
        return self.pipe(*args, **kwargs, **self.options)

    def defaults(self) -> dict:
        return self.pipe.defaults()


def run_prior(dataset: str, prior: str, model=None, steps=None, guidance=None, prior_steps=None,
              prior_guidance=None, seeds=(0, 1, 2, 3), out=None, n_train: int = 300, n_heldout=None) -> dict:  # fmt: skip
    """Score the prior's embeddings on the held-out names, and with `model` the images drawn through it."""
    check_writable(out, "--out")
    root = Path(dataset)
    references = load_references(root) if model else None
    rows = references[0] if references else load_rows(root)
    held = heldout_rows(rows, n_heldout)
    if not held:
        raise UsageError(f"{dataset} has no held-out names (split=heldout) to score the prior on")
    parts, encoder, processor = load_scored_prior(prior)
    p_steps = PRIOR_STEPS if prior_steps is None else prior_steps
    p_guidance = PRIOR_GUIDANCE if prior_guidance is None else prior_guidance
    result = {"prior": score_prior(parts, encoder, processor, root, rows, held, p_steps, p_guidance, seeds)}
    print(f"eval-emoji: prior over seeds: {_line(result['prior']['prior'])}", file=sys.stderr)
    print(
        f"eval-emoji: the text embedding instead: {_line(result['prior']['text_embedding_baseline'])}", file=sys.stderr
    )
    if model:
        pipe = _ThroughPrior(load_pipeline(model), prior=prior, prior_steps=p_steps, prior_guidance=p_guidance)
        g = guidance if guidance is not None else pipe.defaults()["guidance"]
        images = evaluate(pipe, root, [1.0, g], steps, n_train, seeds, n_heldout=n_heldout, references=references)
        result["images"] = images
        print(table(images))
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
