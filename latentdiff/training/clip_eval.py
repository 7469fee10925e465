"""Top-1 retrieval of a CLIP pair (train-clip's eval.json): each image's nearest caption
(image->text) and each caption's nearest image (text->image) by cosine similarity, right when it
is the image's own caption (so two images with one caption do not count against each other).

Three views: the held-out images among themselves, the held-out images against every image and
name of the dataset (their training siblings, e.g. the other skin tones, are the hard negatives),
and `eval_train_images` evenly spaced training images among themselves.
"""

from __future__ import annotations

from pathlib import Path

import torch

from latentdiff.errors import ModelError, UsageError
from latentdiff.training.small_run import load_images

RESAMPLE_BICUBIC = 3  # PIL's BICUBIC, CLIPImageProcessor's default


def processor(resolution: int):
    """The feature_extractor/ unCLIP and IP-Adapter code run before the image tower: resize the short
    side to `resolution`, centre-crop a square, CLIP's mean and std, as `pixels` does in training."""
    from transformers import CLIPImageProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    return CLIPImageProcessor(
        size={"shortest_edge": resolution},
        crop_size={"height": resolution, "width": resolution},
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
        resample=RESAMPLE_BICUBIC,
    )


def pixels(u8):
    """uint8 images (B, 3, H, W) -> the tower's input: [0, 1], then CLIP's mean and std per channel."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    mean, std = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (u8.float() / 255 - mean) / std


def tokenize(tokenizer, texts: list[str], max_length: int):
    """Token ids (N, L), padded as the diffusion pipelines pad them (no attention mask), to the
    longest caption (at most `max_length`): see by_length."""
    return tokenizer(texts, padding="longest", max_length=max_length, truncation=True, return_tensors="pt").input_ids


def by_length(ids, eos: int, chunk: int = 256):
    """(rows, their ids) in chunks of similar length, each cut after its longest caption's end token.
    The causal text tower's pooled output (at a caption's end token) does not see the padding after
    it, so this equals the pipelines' padding to the full window, at a fraction of the cost."""
    found = ids == eos
    ends = torch.where(found.any(1), found.int().argmax(1) + 1, ids.shape[1])
    order = torch.argsort(ends, stable=True)
    for i in range(0, len(ids), chunk):
        rows = order[i : i + chunk]
        yield rows, ids[rows, : int(ends[rows].max())]


@torch.no_grad()
def embed_images(vision, u8, device, chunk: int = 256):
    """Unit-length image embeddings (N, P)."""
    out = [vision(pixel_values=pixels(u8[i : i + chunk]).to(device)).image_embeds for i in range(0, len(u8), chunk)]
    return torch.nn.functional.normalize(torch.cat(out).float(), dim=-1)


@torch.no_grad()
def embed_texts(text, tokenizer, texts: list[str], device):
    """Unit-length caption embeddings (N, P), tokenized as in training."""
    ids = tokenize(tokenizer, texts, text.config.max_position_embeddings)
    out = torch.empty(len(ids), text.config.projection_dim)
    for rows, cut in by_length(ids, tokenizer.eos_token_id):
        out[rows] = text(input_ids=cut.to(device)).text_embeds.float().cpu()
    return torch.nn.functional.normalize(out, dim=-1)


def top1(image_emb, text_emb, captions: list[str], queries) -> dict:
    """Retrieval for the `queries` (indices) among the whole gallery (all rows of both embeddings)."""
    sims = image_emb @ text_emb.T  # (images, captions); row i and column i are one pair
    nearest_text, nearest_image = sims[queries].argmax(1), sims[:, queries].argmax(0)
    asked = [captions[q] for q in queries.tolist()]
    i2t = sum(captions[j] == c for j, c in zip(nearest_text.tolist(), asked))
    t2i = sum(captions[j] == c for j, c in zip(nearest_image.tolist(), asked))
    n = len(asked)
    return {"images": n, "gallery": len(captions), "image_to_text": i2t / n, "text_to_image": t2i / n}


def evaluate(towers: dict, tokenizer, train, heldout, resolution: int, train_images: int, device) -> dict:
    """The three views of the module docstring, from the `vision` and `text` towers."""
    subset = torch.linspace(0, len(train) - 1, min(train_images, len(train))).long().tolist()
    records = [*heldout, *(train[i] for i in subset)]
    result = {"heldout": None, "heldout_among_all": None, "train": None}
    if not records:
        return result
    embed = _embedder(towers, tokenizer, resolution, device)
    images, texts = embed(records)
    captions, h = [r.caption for r in records], len(heldout)
    if h:
        result["heldout"] = top1(images[:h], texts[:h], captions[:h], torch.arange(h))
        taken = set(subset)
        rest = [r for i, r in enumerate(train) if i not in taken]
        if rest:  # every image and name of the dataset
            more = embed(rest)
            images, texts = torch.cat([images, more[0]]), torch.cat([texts, more[1]])
        result["heldout_among_all"] = top1(images, texts, [*captions, *(r.caption for r in rest)], torch.arange(h))
    if subset:
        n = len(subset)
        result["train"] = top1(images[h : h + n], texts[h : h + n], captions[h:], torch.arange(n))
    return result


def _embedder(towers: dict, tokenizer, resolution: int, device):
    def embed(records):
        images = embed_images(towers["vision"], load_images(records, resolution), device)
        return images, embed_texts(towers["text"], tokenizer, [r.caption for r in records], device)

    return embed


def evaluate_folder(dataset: str, folder: str, train_images: int = 512) -> dict:
    """`eval-emoji DATASET --clip RUN`: the retrieval of a train-clip output folder on DATASET."""
    # Here, not at the top: the dataset scanner and the model loader are needed only by this command.
    from latentdiff.models.assemble import load_image_encoder, load_tokenizer
    from latentdiff.training.data.scan import scan_dataset

    root = Path(folder)
    if not all((root / name / "config.json").is_file() for name in ("image_encoder", "text_encoder")):
        raise UsageError(f"--clip {folder} is not a train-clip output (image_encoder/, text_encoder/, tokenizer/)")
    vision = load_image_encoder(root / "image_encoder")
    text, tokenizer = _text_tower(root / "text_encoder"), load_tokenizer(root / "tokenizer")
    resolution = vision.config.image_size
    records = scan_dataset(dataset, resolution, missing_captions="empty", include_heldout=True).records
    train, heldout = [r for r in records if r.split != "heldout"], [r for r in records if r.split == "heldout"]
    towers = {"vision": vision.float().eval(), "text": text}
    return evaluate(towers, tokenizer, train, heldout, resolution, train_images, torch.device("cpu"))


def summary(result: dict) -> str:
    """The held-out figures in one line."""
    held = result["heldout"]
    if not held:
        return "no held-out images (split=heldout) to measure retrieval on"
    return (
        f"held-out top-1 image->text {held['image_to_text']:.3f}, text->image {held['text_to_image']:.3f} "
        f"among {held['images']} held-out images"
    )


def _text_tower(folder: Path):
    from transformers import CLIPTextModelWithProjection

    try:  # safetensors only: a checkpoint must never run code
        return CLIPTextModelWithProjection.from_pretrained(folder, use_safetensors=True).float().eval()
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"cannot load the text tower in {folder}: {str(e).splitlines()[0][:200]}") from None
