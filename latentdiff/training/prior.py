"""`finetune --method prior`: a DALL-E 2 prior (Ramesh et al. 2022) in the Kandinsky 2.2 layout
(KandinskyV22PriorPipeline: prior/, text_encoder/, tokenizer/, scheduler/, image_encoder/,
image_processor/) trained on finetune's loop, checkpoints and resume.

The prior is a PriorTransformer that turns a caption's CLIP text embedding (the projected embedding
and the last hidden states, with their attention mask) into the picture's CLIP image embedding. As
the pipeline samples it, it works on image embeddings normalised by the prior's own statistics
(`(e - clip_mean) / clip_std`; `post_process_latents` undoes it) and predicts the clean embedding
(the x0 objective, the scheduler's prediction_type "sample"): the loss is the MSE between the
prediction at a random timestep and the normalised embedding. Captions are dropped to the empty
text with --caption-dropout, which is what the pipeline's guidance compares against. A prior whose
clip_std is still zero (never trained) takes the dataset's mean and spread.

The image embeddings come from the folder's CLIP image encoder, or any CLIPVisionModelWithProjection
folder given with --image-encoder (which the saved prior then carries), encoded once before training
(both orientations with --flip) as latents are cached; text embeddings are cached per caption (the
text encoder stays frozen). Every draw (flip, caption dropout, timestep, noise) comes from the step's
generator, so resume is exact.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from latentdiff.errors import UsageError
from latentdiff.families.unclip import encode_pictures, prior_text
from latentdiff.images.write import to_pil
from latentdiff.models.assemble import load_prior
from latentdiff.models.unclip_parts import check_prior_folder
from latentdiff.runtime.files import as_umask_allows
from latentdiff.runtime.threads import default_training_threads
from latentdiff.training.batches import caption_options, dropout_mask, pick_captions
from latentdiff.training.data.dataset import ImageCaptionDataset
from latentdiff.training.data.order import run_order
from latentdiff.training.image_tower import encoder_folder, image_tower, spread
from latentdiff.training.objective import prior_loss
from latentdiff.training.prior_scratch import is_prior_recipe, new_prior_parts, read_prior_recipe
from latentdiff.training.state import Setup, TrainState

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class PriorParts:
    """What `--method prior` trains and encodes with (Setup.components for this method)."""

    prior: torch.nn.Module
    text_encoder: torch.nn.Module  # CLIPTextModelWithProjection, frozen
    tokenizer: object
    scheduler_config: dict
    image_encoder: torch.nn.Module  # CLIPVisionModelWithProjection, frozen
    processor: object  # its CLIPImageProcessor

    def text_parts(self) -> dict:
        """Under Components.unclip's names, as families/unclip.prior_text reads them."""
        return {"prior_tokenizer": self.tokenizer, "prior_text_encoder": self.text_encoder}


def check_prior_inputs(cfg) -> tuple[Path, Path]:
    """(the folder holding the prior's image encoder and processor, the image encoder folder), or one
    UsageError before the run touches OUT: --model is a prior folder, or a new prior's recipe
    (prior_scratch.py) whose `clip:` train-clip output holds them."""
    if is_prior_recipe(cfg.model):
        path, encoder = read_prior_recipe(cfg.model)["clip"], "feature_extractor"
    else:
        check_prior_folder(cfg.model, "--method prior: --model")
        path, encoder = Path(cfg.model), "image_processor"
    folder = path / "image_encoder" if cfg.image_encoder is None else Path(cfg.image_encoder)
    return path / encoder, encoder_folder(folder, "prior")


def load_prior_parts(cfg) -> PriorParts:
    """The prior of --model (a prior folder, or a new one from a recipe) with its (or --image-encoder's)
    image encoder, checked: the x0 objective, and image embeddings as wide as the prior's."""
    beside, folder = check_prior_inputs(cfg)
    encoder, processor = image_tower(folder, cfg.allow_pickle, () if cfg.image_encoder else (beside,))
    path = Path(cfg.model)
    if is_prior_recipe(cfg.model):
        parts = new_prior_parts(read_prior_recipe(path), cfg.seed, cfg.allow_pickle)
    else:
        parts = load_prior(path, cfg.allow_pickle)
    sched = parts["prior_scheduler"]
    if sched.get("prediction_type", "sample") != "sample":
        raise UsageError(
            f"--method prior trains the x0 objective; {path}'s scheduler predicts {sched['prediction_type']!r}"
        )
    prior = parts["prior"]
    width, want = int(encoder.config.projection_dim), int(prior.clip_mean.shape[-1])
    if width != want:
        raise UsageError(f"the image encoder {folder} makes {width}-wide embeddings; the prior {path} takes {want}")
    return PriorParts(prior, parts["prior_text_encoder"], parts["prior_tokenizer"], sched, encoder, processor)


class PriorSource:
    """A micro-batch's normalised image embeddings (the target) and its captions' text embeddings."""

    def __init__(self, parts: PriorParts, dataset, captions, *, cache, flip, caption_dropout, device, progress,
                 alternatives=None):  # fmt: skip
        self.parts, self.dataset, self.captions = parts, dataset, captions
        self.options = caption_options(captions, alternatives)
        self.flip, self.p_drop, self.device = flip, caption_dropout, device
        self.texts: dict[str, tuple] = {}
        self.embeds = self._embed_all(progress) if cache else None  # per image (views, D)

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """(b, 3, H, W) in [-1, 1] -> (b, D), as generation's variations encode a picture."""
        return encode_pictures(self.parts.image_encoder, self.parts.processor, to_pil(pixels)).float().cpu()

    def _embed_all(self, progress: bool) -> list:
        from tqdm.auto import tqdm

        out = []
        with tqdm(
            total=len(self.captions), desc="caching image embeddings", file=sys.stderr, disable=not progress
        ) as bar:
            for pixels, ids in self.dataset.unaugmented(8):
                views = [self._embed(pixels)] + ([self._embed(pixels.flip(-1))] if self.flip else [])
                out += list(torch.stack(views, 1))
                bar.update(len(ids))
        return out

    def image_embeds(self, indices: list[int], gen: torch.Generator, epoch: int) -> torch.Tensor:
        """(B, D) CLIP image embeddings of the batch (a drawn orientation of each, when flipping)."""
        if self.embeds is None:
            self.dataset.set_epoch(epoch)
            return self._embed(torch.stack([self.dataset[i]["pixel_values"] for i in indices]))
        views = torch.randint(0, 2, (len(indices),), generator=gen) if self.flip else [0] * len(indices)
        return torch.stack([self.embeds[i][int(v)] for i, v in zip(indices, views)])

    @torch.no_grad()
    def text(self, indices: list[int], gen: torch.Generator) -> tuple:
        """(text embeds (B, D), hidden states (B, T, W), mask (B, T)); each caption dropped to "" with p_drop."""
        drop = dropout_mask(len(indices), self.p_drop, gen)
        texts = pick_captions(self.captions, self.options, indices, drop, gen)
        new = sorted(set(texts) - self.texts.keys())
        if new:
            encoded = prior_text(self.parts.text_parts(), new)
            for k, t in enumerate(new):
                self.texts[t] = tuple(x[k].cpu() for x in encoded)
        return tuple(torch.stack(rows).to(self.device) for rows in zip(*(self.texts[t] for t in texts)))


@torch.no_grad()
def fit_statistics(prior, source: PriorSource) -> bool:
    """A prior that was never trained (clip_std zero) takes the dataset's embedding mean and spread;
    returns whether it did."""
    if bool((prior.clip_std != 0).all()):
        return False
    if source.embeds is None:
        raise UsageError(
            "this prior has no embedding statistics yet (clip_std is zero); they come from the cached "
            "image embeddings: drop --no-cache and use --crop center"
        )
    embeds = torch.cat(source.embeds)
    prior.clip_mean.copy_(embeds.mean(0, keepdim=True))
    prior.clip_std.copy_(spread(embeds))
    return True


def prepare_prior(cfg, acc, records: list, threads):
    """The prior method's (state, wrapped modules, batch_loss, data order) for finetune's loop."""
    parts = load_prior_parts(cfg)
    dtype = DTYPES[cfg.mixed_precision]
    for m in (parts.text_encoder, parts.image_encoder):
        m.to(acc.device, dtype).requires_grad_(False)
    prior = _trainable(parts.prior).to(acc.device)
    default_training_threads(threads, acc.device, sum(p.numel() for p in prior.parameters()))
    dataset = ImageCaptionDataset(records, cfg.resolution, cfg.crop, cfg.flip, cfg.seed, None)
    cache = cfg.cache and cfg.crop == "center"
    source = PriorSource(parts, dataset, [r.caption for r in records], cache=cache, flip=cfg.flip,
                         caption_dropout=cfg.caption_dropout, device=acc.device, progress=acc.is_main_process,
                         alternatives=[r.alt_captions for r in records] if cfg.alt_captions else None)  # fmt: skip
    if fit_statistics(prior, source) and acc.is_main_process:
        print("latentdiff: the prior's clip_mean/clip_std are the dataset's", file=sys.stderr, flush=True)
    state = _state(cfg, parts, prior)
    wrapped, state.optimizer = acc.prepare(prior, state.optimizer)
    scheduler = _scheduler(parts.scheduler_config)

    def batch_loss(idx: list[int], gen: torch.Generator, epoch: int) -> torch.Tensor:
        embeds = source.image_embeds(idx, gen, epoch).to(acc.device)
        x0 = (embeds - prior.clip_mean) / prior.clip_std  # (B, D), the prior's normalised space
        text = source.text(idx, gen)
        with acc.autocast():
            return prior_loss(wrapped, scheduler, x0, text, gen)

    return state, {"prior": wrapped}, batch_loss, run_order(cfg, acc.num_processes, records)


def _trainable(prior):
    """The prior's weights trainable in fp32; clip_mean and clip_std are statistics, not weights (the
    loss never reaches them)."""
    prior = prior.to(torch.float32).requires_grad_(True).train()
    prior.clip_mean.requires_grad_(False)
    prior.clip_std.requires_grad_(False)
    return prior


def prior_state(cfg) -> TrainState:
    """A prior run's TrainState without its data, for `latentdiff export` to load a checkpoint into."""
    parts = load_prior_parts(cfg)
    return _state(cfg, parts, _trainable(parts.prior))


def _state(cfg, parts: PriorParts, prior) -> TrainState:
    """The TrainState of training `prior`; its statistics are saved with each checkpoint (`fixed`)."""
    state = TrainState.of(cfg, Setup(parts, str(Path(cfg.model).resolve()), False, False), {"prior": prior})
    state.fixed = {"prior.clip_mean": prior.clip_mean, "prior.clip_std": prior.clip_std}
    return state


def _scheduler(config: dict):
    import diffusers

    return getattr(diffusers, config.get("_class_name") or "UnCLIPScheduler").from_config(config)


def save_prior(out: Path, state) -> None:
    """OUT as a Kandinsky 2.2 prior folder, as KandinskyV22PriorPipeline saves itself (fp32)."""
    from diffusers import KandinskyV22PriorPipeline

    p: PriorParts = state.setup.components
    prior = state.modules["prior"].eval()
    KandinskyV22PriorPipeline(
        prior=prior,
        image_encoder=p.image_encoder.float(),
        text_encoder=p.text_encoder.float(),
        tokenizer=p.tokenizer,
        scheduler=_scheduler(p.scheduler_config),
        image_processor=p.processor,
    ).save_pretrained(out, safe_serialization=True)
    as_umask_allows(out)
