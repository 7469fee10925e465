"""Train a CLIP image tower against a model's text encoder:
`latentdiff train-clip DATASET --model MODEL --out RUN [--config configs/clip/emoji.yaml]`.

DALL-E 2's prior maps CLIP text embeddings to CLIP image embeddings, so a model of ours needs an
image tower that shares an embedding space with its own text encoder. This trains one as CLIP did
(Radford et al. 2021, Fig. 3): a ViT (transformers' CLIPVisionModelWithProjection) and the model's
text encoder with a text projection added (CLIPTextModelWithProjection) are pulled together by the
symmetric InfoNCE loss over each batch's image-caption pairs, with a learned temperature. The text
tower is frozen by default (its pooled outputs are computed once, only its projection learns) or
fine-tuned with --train-text. Each step draws each image's caption among `text` and the metadata's
alt_texts, so every caption an image has is used.

The run is train-vae's (small_run.py): images decoded once, exact resume, checkpoints, metrics.
OUT then holds the StableUnCLIPImg2ImgPipeline layout's image_encoder/ and feature_extractor/, and
text_encoder/ + tokenizer/, all loadable by transformers, and eval.json with top-1 retrieval
(clip_eval.py) on the held-out split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from latentdiff.errors import UsageError
from latentdiff.runtime.device import note_cpu_bf16
from latentdiff.runtime.files import as_umask_allows
from latentdiff.runtime.libraries import quiet_libraries
from latentdiff.runtime.memory import check_fits
from latentdiff.runtime.threads import default_training_threads, torch_threads
from latentdiff.training.bounds import ADAPTER_BYTES, TRAIN_TENSORS
from latentdiff.training.clip_config import RUN_ENTRIES, ClipTrainConfig
from latentdiff.training.clip_eval import by_length, evaluate, pixels, processor, summary, tokenize
from latentdiff.training.lr_schedule import make_lr_schedule
from latentdiff.training.recipe import write_recipe
from latentdiff.training.small_run import RunState, batch_indices, load_images, prepare_out, scan_split, train_loop
from latentdiff.training.trackers import RunLog

MAX_SCALE = math.log(100.0)  # CLIP clips the learned logit scale at 100


def clip_loss(image_embeds, text_embeds, logit_scale):
    """CLIP's symmetric InfoNCE: cross-entropy of each image over the batch's captions and of each
    caption over its images, the matching pair the target; cosine similarities times exp(logit_scale)."""
    image, text = F.normalize(image_embeds, dim=-1), F.normalize(text_embeds, dim=-1)
    logits = logit_scale.clamp(max=MAX_SCALE).exp() * image @ text.T  # (B images, B captions)
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class Captions:
    """Every caption of the training images, tokenized once; a step draws one per image."""

    def __init__(self, records, tokenizer, max_length: int, use_alts: bool):
        options = [(r.caption, *(r.alt_captions if use_alts else ())) for r in records]
        self.texts = [t for opts in options for t in opts]
        counts = torch.tensor([len(o) for o in options])
        self.counts, self.offsets = counts, torch.cumsum(counts, 0) - counts
        self.ids, self.eos = tokenize(tokenizer, self.texts, max_length), tokenizer.eos_token_id  # (captions, L)
        self.pooled = None  # the frozen tower's pooled outputs (freeze)

    def draw(self, idx, generator):
        """One caption index per image of `idx`, uniformly among its captions."""
        r = torch.randint(0, 2**31 - 1, (len(idx),), generator=generator)
        return self.offsets[idx] + r % self.counts[idx]

    def freeze(self, text, device) -> None:
        """The frozen tower's pooled outputs of every caption, once: a step then projects them only."""
        self.pooled = pooled_outputs(text, self.ids, self.eos, device)

    def embeds(self, text, caption_idx, device):
        if self.pooled is not None:
            return text.text_projection(self.pooled[caption_idx])
        return text(input_ids=self.ids[caption_idx].to(device)).text_embeds


@torch.no_grad()
def pooled_outputs(text, ids, eos: int, device):
    """The text tower's pooled output (before its projection) of every row of `ids`: (N, H)."""
    out = torch.empty(len(ids), text.config.hidden_size, device=device)
    for rows, cut in by_length(ids, eos):
        out[rows.to(device)] = text.text_model(input_ids=cut.to(device)).pooler_output.float()
    return out


# --- the two towers ----------------------------------------------------------------------------


def load_text_tower(model: str, projection_dim: int, seed: int = 0):
    """MODEL's text encoder as a CLIPTextModelWithProjection (a new projection, unless it has one of
    that width, which is kept) in fp32, and its tokenizer; a folder without a CLIP text encoder is a UsageError."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    # Here, not at the top: the model loader imports diffusers, needed only once a run starts.
    from latentdiff.models.assemble import load_text_encoder

    path = Path(model)
    if not (path / "text_encoder" / "config.json").is_file() or not (path / "tokenizer").is_dir():
        raise UsageError(
            f"--model {model} is not a model folder with a text_encoder/ and tokenizer/; "
            "train-clip matches images to that model's text encoder"
        )
    encoder, tokenizer = load_text_encoder(path)
    if not isinstance(encoder, (CLIPTextModel, CLIPTextModelWithProjection)):
        raise UsageError(f"--model {model}: its text encoder is a {type(encoder).__name__}, not a CLIP text model")
    config = CLIPTextConfig.from_dict({**encoder.config.to_dict(), "projection_dim": projection_dim})
    torch.manual_seed(seed)  # a new projection's initial weights
    tower = CLIPTextModelWithProjection(config)
    # transformers 5's CLIPTextModel is the text transformer itself; a ...WithProjection wraps one
    tower.text_model.load_state_dict(getattr(encoder, "text_model", encoder).float().state_dict())
    kept = getattr(encoder, "text_projection", None)
    if kept is not None and kept.weight.shape == tower.text_projection.weight.shape:  # a train-clip output
        tower.text_projection.load_state_dict(kept.float().state_dict())
    return tower.float(), tokenizer


def build_vision(cfg: ClipTrainConfig, device=None):
    """The image tower, seeded; on the meta device (`device="meta"`) it holds no memory, so its
    weights can be counted before any is made."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(cfg.seed)
    config = CLIPVisionConfig(**cfg.vision, image_size=cfg.resolution, projection_dim=cfg.projection_dim)
    with torch.device(device) if device else contextlib.nullcontext():
        return CLIPVisionModelWithProjection(config)


def build_pair(cfg: ClipTrainConfig, text):
    """The trained module: `vision` (seeded), `text` and CLIP's learned `logit_scale` (init log 1/0.07)."""
    pair = torch.nn.ModuleDict({"vision": build_vision(cfg), "text": text})
    pair.register_parameter("logit_scale", torch.nn.Parameter(torch.tensor(math.log(1 / 0.07))))
    text.text_model.requires_grad_(cfg.train_text)
    return pair


def optimizer(cfg: ClipTrainConfig, pair):
    """AdamW: the image tower, the text projection and the temperature at lr; the text tower's own
    weights at text_lr (only with --train-text)."""
    fast = [*pair["vision"].parameters(), *pair["text"].text_projection.parameters()]
    # CLIP keeps its temperature out of the weight decay
    groups = [{"params": fast, "lr": cfg.lr}, {"params": [pair.logit_scale], "lr": cfg.lr, "weight_decay": 0.0}]
    if cfg.train_text:
        groups.append({"params": list(pair["text"].text_model.parameters()), "lr": cfg.text_lr})
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def check_memory(cfg: ClipTrainConfig, text, images: int, device) -> None:
    """Before anything of their size is made: the images held in memory, the trained weights with
    their AdamW state, and a step's activations."""
    res, vision = cfg.resolution, build_vision(cfg, device="meta")
    check_fits(images * 3 * res * res, f"holding {images:,} image(s) at resolution {res}", "lower resolution")
    trained = [vision, text] if cfg.train_text else [vision, text.text_projection]
    params = sum(p.numel() for m in trained for p in m.parameters())
    what = f"the {params:,} trained weights with their gradients and AdamW's moments"
    check_fits(params * ADAPTER_BYTES, what, "narrow the vision: section", device)
    v = vision.config
    tokens = (res // v.patch_size) ** 2 + 1
    need = cfg.batch_size * tokens * v.intermediate_size * v.num_hidden_layers * TRAIN_TENSORS * 4
    what = f"a train-clip step at resolution {res} with batch_size {cfg.batch_size}"
    check_fits(need, what, "lower batch_size or resolution, or narrow the vision: section", device)


# --- the run -----------------------------------------------------------------------------------


def train_clip(cfg: ClipTrainConfig) -> dict:
    """Train (or resume), then write OUT's towers and eval.json; returns the eval.json contents."""
    with torch_threads(cfg.num_threads) as threads:
        return _train_clip(cfg, threads)


def _train_clip(cfg: ClipTrainConfig, threads) -> dict:
    quiet_libraries()  # transformers' save bars and its torchvision notice; our own bar says the progress
    text, tokenizer = load_text_tower(cfg.model, cfg.projection_dim, cfg.seed)
    out = prepare_out(cfg, "train-clip", RUN_ENTRIES, model=cfg.model)
    train, heldout = scan_split(cfg, out)
    print(f"train-clip: {len(train)} training and {len(heldout)} held-out images", file=sys.stderr)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_memory(cfg, text, len(train) + len(heldout), device)
    pair = build_pair(cfg, text).to(device)
    train_u8 = load_images(train, cfg.resolution)
    if cfg.mixed_precision == "bf16":
        note_cpu_bf16(device, torch.bfloat16, "--mixed-precision no")
    default_training_threads(threads, device, sum(p.numel() for p in pair.parameters()))
    captions = Captions(train, tokenizer, text.config.max_position_embeddings, cfg.alt_captions)
    opt = optimizer(cfg, pair)
    schedule = make_lr_schedule(opt, cfg.lr_schedule, cfg.warmup_steps, cfg.max_steps)
    state = RunState(pair, opt, schedule, torch.Generator().manual_seed(cfg.seed))
    start, seconds = state.resume(out, "train-clip") if cfg.resume else (0, 0.0)
    if not cfg.train_text:
        captions.freeze(pair["text"], device)
    write_recipe(cfg, out, last_keys=("vision",))
    step = _stepper(cfg, pair, opt, captions, train_u8, state.generator, device)
    pair.train()
    with RunLog(out, cfg.report_to, dataclasses.asdict(cfg), resumed_at=start) as log:
        seconds = train_loop(cfg, "train-clip", log, out, state, step, start, seconds)
    _save(cfg, out, pair, tokenizer)
    towers = {"vision": pair["vision"].eval(), "text": pair["text"].eval()}
    result = evaluate(towers, tokenizer, train, heldout, cfg.resolution, cfg.eval_train_images, device)
    result.update(steps=cfg.max_steps, train_seconds=round(seconds, 1), temperature=_temperature(pair))
    _write_json(out / "eval.json", result)
    print(f"train-clip: {summary(result)}", file=sys.stderr)
    return result


def _stepper(cfg: ClipTrainConfig, pair, opt, captions: Captions, train_u8, generator, device):
    """The pure step function train_loop calls: a batch, its captions drawn, one AdamW step."""

    def step(index: int):
        idx = batch_indices(len(train_u8), cfg.batch_size, cfg.seed, index)
        chosen = captions.draw(idx, generator)
        x = pixels(train_u8[idx]).to(device)  # (B, 3, H, W), CLIP-normalised
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.mixed_precision == "bf16"):
            image = pair["vision"](pixel_values=x).image_embeds
            text = captions.embeds(pair["text"], chosen, device)
            loss = clip_loss(image.float(), text.float(), pair.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(pair.parameters(), cfg.max_grad_norm)
        opt.step()
        return {"loss": loss.item(), "temperature": _temperature(pair)}, len(idx)

    return step


def _temperature(pair) -> float:
    return round(1 / pair.logit_scale.detach().clamp(max=MAX_SCALE).exp().item(), 6)


def _save(cfg: ClipTrainConfig, out: Path, pair, tokenizer) -> None:
    """image_encoder/ + feature_extractor/ (unCLIP's layout), text_encoder/ + tokenizer/."""
    for name, module in (("image_encoder", pair["vision"]), ("text_encoder", pair["text"])):
        shutil.rmtree(out / name, ignore_errors=True)
        module.save_pretrained(out / name, safe_serialization=True)
        as_umask_allows(out / name)
    tokenizer.save_pretrained(str(out / "tokenizer"))
    processor(cfg.resolution).save_pretrained(str(out / "feature_extractor"))


def _write_json(path: Path, values: dict) -> None:
    import json

    path.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
