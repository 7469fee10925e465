"""A new DALL-E 2 prior for `finetune --method prior --model configs/prior/*.yaml`: a seeded
PriorTransformer of the YAML's size on the CLIP pair of a `train-clip` output (its text tower with
projection, tokenizer and image tower), with an UnCLIPScheduler, as the Kandinsky 2.2 prior folder
`load_prior` reads would hold them. Its clip_mean/clip_std start at zero, so training fits them to
the dataset's embeddings (prior.fit_statistics); the saved OUT is then an ordinary prior folder.

The YAML (configs/prior/emoji.yaml):

    clip: runs/emoji-clip        # a train-clip output: text_encoder/, tokenizer/, image_encoder/, feature_extractor/
    prior: {num_layers: 4, num_attention_heads: 4, attention_head_dim: 64}   # PriorTransformer sizes
    scheduler: {...}             # optional: the UnCLIPScheduler (default: Karlo's prior scheduler)

The embedding width and the number of text tokens come from the CLIP pair, not the YAML.
"""

from __future__ import annotations

from pathlib import Path

import torch

from latentdiff.errors import UsageError
from latentdiff.models.assemble import load_tokenizer
from latentdiff.models.build import is_arch_file
from latentdiff.runtime.reading import read_yaml

# Karlo's prior_scheduler (kakaobrain/karlo-v1-alpha): x0 prediction, clipped to +-5 in the normalised space.
SCHEDULER = {
    "_class_name": "UnCLIPScheduler",
    "variance_type": "fixed_small_log",
    "prediction_type": "sample",
    "num_train_timesteps": 1000,
    "clip_sample": True,
    "clip_sample_range": 5.0,
}
# PriorTransformer's own sizes a recipe may set; the widths and token count follow the CLIP pair.
SIZES = {"num_layers": 64, "num_attention_heads": 256, "attention_head_dim": 1024}
CLIP_FOLDERS = ("text_encoder", "tokenizer", "image_encoder", "feature_extractor")


def is_prior_recipe(model) -> bool:
    return is_arch_file(model)


def read_prior_recipe(path) -> dict:
    """The checked YAML: `clip` a train-clip output folder, `prior` whole sizes within ceilings."""
    recipe = read_yaml(Path(path), "prior recipe")
    if not isinstance(recipe, dict) or not isinstance(recipe.get("clip"), str):
        raise UsageError(f"prior recipe {path} must be a mapping with `clip:` (a train-clip output folder)")
    clip = Path(recipe["clip"])
    missing = [name for name in CLIP_FOLDERS if not (clip / name).is_dir()]
    if missing:
        raise UsageError(f"prior recipe {path}: clip {clip} is not a train-clip output (lacks {', '.join(missing)}/)")
    sizes = recipe.get("prior") or {}
    unknown = sorted(str(k) for k in set(sizes) - set(SIZES)) if isinstance(sizes, dict) else ["(not a mapping)"]
    if unknown:
        raise UsageError(f"prior recipe {path}: prior: takes {', '.join(SIZES)}, not {', '.join(unknown)[:200]}")
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= SIZES[key]:
            raise UsageError(f"prior recipe {path}: prior: {key} must be a whole number from 1 to {SIZES[key]}")
    scheduler = recipe.get("scheduler", SCHEDULER)
    if not isinstance(scheduler, dict):
        raise UsageError(f"prior recipe {path}: scheduler: must be a mapping (an UnCLIPScheduler config)")
    return {"clip": clip, "prior": dict(sizes), "scheduler": {**SCHEDULER, **scheduler}}


def new_prior_parts(recipe: dict, seed: int, allow_pickle: bool = False) -> dict:
    """The prior parts (Components.unclip's names, as models.assemble.load_prior returns them) of a
    new prior on the recipe's CLIP pair, its weights seeded with `seed`."""
    from diffusers import PriorTransformer
    from transformers import CLIPTextModelWithProjection

    clip = recipe["clip"]
    try:  # safetensors only: a checkpoint must never run code
        text = CLIPTextModelWithProjection.from_pretrained(clip / "text_encoder", use_safetensors=not allow_pickle)
    except (OSError, ValueError, RuntimeError) as e:
        raise UsageError(f"cannot load the text tower in {clip}: {str(e).splitlines()[0][:200]}") from None
    tokenizer = load_tokenizer(clip / "tokenizer")
    width, hidden = int(text.config.projection_dim), int(text.config.hidden_size)
    if width != hidden:  # PriorTransformer projects the hidden states with an embedding_dim-wide Linear
        raise UsageError(f"a prior needs the text tower's hidden size ({hidden}) equal to its projection ({width})")
    torch.manual_seed(seed)
    prior = PriorTransformer(**recipe["prior"], embedding_dim=width, num_embeddings=int(tokenizer.model_max_length))
    return {
        "prior": prior,
        "prior_text_encoder": text.float().eval(),
        "prior_tokenizer": tokenizer,
        "prior_scheduler": dict(recipe["scheduler"]),
    }
