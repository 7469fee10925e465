"""`FinetuneConfig`: every knob of `latentdiff finetune`, validated once, saved with the run.
Each field's docstring is its flag's help (see config/flags.py)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from latentdiff.config.common import check
from latentdiff.config.flags import check_types
from latentdiff.training.bounds import check_ceilings
from latentdiff.training.lr_schedule import SCHEDULES
from latentdiff.training.trackers import REPORT_TO

LORA_FORMATS = ("both", "kohya", "diffusers")
# diffusers.training_utils' timestep densities and loss weightings (SD3 paper, section 3.1)
WEIGHTING_SCHEMES = ("none", "logit_normal", "mode", "sigma_sqrt", "cosmap")
# The flow-matching options' ranges: past them float32 turns the draws and the shifted table into inf or NaN
# (the released trainers' values: logit 0 and 1, mode 1.29, shift 1-3, guidance 1-3.5).
FLOW_RANGES = (
    ("logit_mean", -10.0, 10.0),
    ("logit_std", 1e-3, 10.0),
    ("mode_scale", 0.0, 10.0),
    ("flow_shift", 1e-3, 1000.0),
    ("guidance", 0.0, 100.0),  # generate's --guidance ceiling
)


@dataclass
class FinetuneConfig:
    dataset: str = ""
    """Folder of images with captions (.txt beside each image, metadata.jsonl or metadata.csv; for
    --method controlnet, metadata rows with a conditioning_image column naming each image's map)."""
    model: str | None = None
    """Base model (SD 1.x/2.x or SDXL base; directory or hub id) or an architecture YAML
    (configs/models/*.yaml) to train from scratch."""
    out: str = ""
    """Run folder: checkpoints, samples, metrics, config.yaml and the final model."""
    caption_extension: str = ".txt"
    """Extension of the caption file beside each image (kohya's --caption_extension), e.g. .caption."""
    repeats: int = 1
    """Times each image is seen an epoch (kohya's repeats). Images in a top-level folder named N_name
    (kohya's layout, e.g. '10_sks dog') are seen N times instead and, lacking a caption, take name."""
    method: str = "lora"
    """lora (low-rank adapters on attention), full (all UNet weights, with EMA), controlnet (a
    ControlNet made from the UNet and trained beside the frozen model; OUT becomes a diffusers
    ControlNet folder for --control), prior (a Kandinsky 2.2 prior folder as --model: its
    PriorTransformer learns the captions' CLIP image embeddings; OUT is a prior for --prior) or unclip
    (an SD 1.x/2.x model and --image-encoder made a Stable unCLIP decoder, all UNet weights trained;
    OUT takes --variations and --prior)."""
    image_encoder: str | None = None
    """--method prior or unclip: a CLIPVisionModelWithProjection folder whose image embeddings the prior
    learns, or the decoder is conditioned on (default: the model folder's image_encoder/); the saved
    model carries it."""
    max_steps: int = 1000
    """Optimizer steps; may be raised when resuming."""
    batch_size: int = 4
    """Images per process per micro-step; the global batch is batch_size x processes x grad_accum."""
    grad_accum: int = 1
    """Micro-steps per optimizer step."""
    lr: float = 1e-4
    """Peak learning rate of AdamW."""
    lr_schedule: str = "constant"
    """LR schedule after warmup_steps of linear warm-up (diffusers' get_scheduler set)."""
    warmup_steps: int = 0
    """Steps of linear warm-up from 0 to lr."""
    weight_decay: float = 1e-2
    """AdamW weight decay."""
    resolution: int = 512
    """Training images are resized and cropped to this square size (or bucketed around its area)."""
    crop: str = "center"
    """center or random (random crops disable latent caching, as each epoch sees new pixels)."""
    flip: bool = False
    """Random horizontal flips."""
    buckets: bool = False
    """Aspect-ratio bucketing instead of square crops."""
    lora_rank: int = 8
    """Rank of the LoRA adapters."""
    lora_format: str = "both"
    """LoRA file layout: kohya (OUT/NAME.safetensors, for A1111 and ComfyUI), diffusers
    (OUT/pytorch_lora_weights.safetensors) or both; either keeps OUT usable as --model and --lora."""
    output_name: str | None = None
    """NAME of the kohya LoRA file, OUT/NAME.safetensors: what A1111 and ComfyUI list and credit in
    infotext (default: the run folder's name)."""
    train_text_encoder: bool = False
    """Also train the text encoder (LoRA or full); both of them on SDXL."""
    caption_dropout: float = 0.1
    """Probability of training on the empty caption, which is what makes CFG work."""
    alt_captions: bool = False
    """Draw each image's caption every step among its `text` and its metadata.jsonl `alt_texts`
    (build-emoji writes the name with its subgroup and its group), uniformly, from the step's seed."""
    missing_captions: str = "error"
    """error or empty (train uncaptioned images unconditionally)."""
    snr_gamma: float | None = None
    """Min-SNR-gamma loss weighting (Hang et al. 2023); 5.0 is the paper's choice."""
    noise_offset: float = 0.0
    """Offset noise strength (e.g. 0.05) so the model learns very dark or bright images."""
    min_timestep: int = 0
    """Draw training timesteps from min_timestep up (kohya's --min_timestep; DDPM models)."""
    max_timestep: int | None = None
    """Draw training timesteps below this (kohya's --max_timestep; default: the schedule's length), e.g. a
    stage sampled in two steps from pure noise trains only where it samples."""
    weighting_scheme: str | None = None
    """Flow-matching models (Flux.1, SD 3/3.5, Chroma): how training timesteps are drawn and the loss
    weighted, as diffusers' LoRA trainers: none (uniform), logit_normal, mode, sigma_sqrt or cosmap
    (default: the family's trainer's: none for Flux.1 and Chroma, logit_normal for SD 3/3.5)."""
    logit_mean: float = 0.0
    """Mean of the logit_normal timestep draw (flow-matching models)."""
    logit_std: float = 1.0
    """Standard deviation of the logit_normal timestep draw (flow-matching models)."""
    mode_scale: float = 1.29
    """Scale of the mode timestep draw (flow-matching models)."""
    flow_shift: float | None = None
    """Shift the training noise levels s to shift*s/(1+(shift-1)*s) (flow-matching models; default: the
    model scheduler's fixed shift, SD3's 3.0; none for Flux.1 dev, as diffusers trains it)."""
    guidance: float | None = None
    """The distilled guidance a guidance-embedding model (Flux.1 dev) is trained at (default 3.5, as
    diffusers' train_dreambooth_lora_flux.py)."""
    ema_decay: float | None = 0.9999
    """EMA of trained weights for full fine-tuning (none disables it)."""
    mixed_precision: str = "no"
    """no, fp16 or bf16: the compute dtype; trainable weights always stay fp32."""
    gradient_checkpointing: bool = False
    """Trade compute for memory."""
    num_threads: int | None = None
    """CPU threads for torch (default: 1 on the CPU for models under 50M parameters, such as the
    shipped one, where a second thread made each step slower (benchmarks/train_threads.py); else
    torch's own, one per core)."""
    compile: bool = False
    """torch.compile the UNet's forward and backward (on CUDA also channels_last); the first steps
    compile (minutes on a small CPU), later runs reuse the on-disk cache."""
    use_8bit_adam: bool = False
    """bitsandbytes 8-bit AdamW."""
    cache: bool = True
    """Encode images (and captions, when the text encoder is frozen) once before training."""
    checkpoint_every: int = 500
    """Steps between checkpoints."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept; older ones are deleted once a newer one is complete."""
    validate_every: int = 0
    """Write sample images for the validation prompts every N steps (0: never)."""
    validation_prompts: list[str] = dataclasses.field(default_factory=list)
    """Validation prompts (flag: a FILE with one prompt per line)."""
    validation_steps: int | None = None
    """Sampling steps of validation images (default: the model's)."""
    log_every: int = 10
    """Steps between rows of metrics.jsonl (and tracker logs)."""
    report_to: str = "none"
    """Also log loss, lr, images/s and validation images to tensorboard (OUT/logs) or wandb."""
    seed: int = 0
    """Seeds LoRA init, data order, noise and caption dropout."""
    resume: bool = False
    """Continue from the latest complete checkpoint with the saved recipe (OUT/config.yaml)."""
    change_recipe: bool = False
    """With --resume: accept values that differ from the saved recipe (otherwise refused)."""
    overwrite: bool = False
    """Start over, deleting the run in --out (only the files the run wrote)."""
    allow_pickle: bool = False
    """Allow pickle weights for the base model."""
    follow_symlinks: bool = False
    """Use dataset files reached through symlinks that point outside the dataset folder."""
    sample_defaults: dict = dataclasses.field(default_factory=dict)
    """Recommended sampling settings written into the output model's latentdiff.json, e.g. '{steps: 20}'."""

    required = ("model", "out")
    choices = {
        "method": ("lora", "full", "controlnet", "prior", "unclip"),
        "lora_format": LORA_FORMATS,
        "lr_schedule": SCHEDULES,
        "crop": ("center", "random"),
        "missing_captions": ("error", "empty"),
        "mixed_precision": ("no", "fp16", "bf16"),
        "report_to": REPORT_TO,
        "weighting_scheme": WEIGHTING_SCHEMES,
    }

    def __post_init__(self):
        check(bool(self.dataset), "a DATASET folder is required")
        check(bool(self.out), "--out DIR is required")
        check(self.model is not None, "--model is required (a model directory, hub id, or configs/models/*.yaml)")
        for name, label in (
            ("dataset", "DATASET"),
            ("out", "--out"),
            ("model", "--model"),
            ("image_encoder", "--image-encoder"),
        ):
            value = getattr(self, name)
            check(
                not isinstance(value, str) or "\0" not in value,
                f"{label} {value!r:.200} holds a NUL byte, which no path can",
            )
        check_types(self)
        for name in (
            "max_steps",
            "batch_size",
            "grad_accum",
            "lora_rank",
            "repeats",
            "checkpoint_every",
            "keep_checkpoints",
            "log_every",
        ):
            check(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        check_ceilings(self, flags=True)
        check(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        check(
            self.resolution >= 8 and self.resolution % 8 == 0,
            f"--resolution must be a multiple of 8, got {self.resolution}",
        )
        check(0.0 <= self.caption_dropout < 1.0, f"--caption-dropout must be in [0, 1), got {self.caption_dropout}")
        check(self.validate_every >= 0 and self.warmup_steps >= 0, "--validate-every and --warmup-steps must be >= 0")
        check(self.validation_steps is None or self.validation_steps >= 1, "--validation-steps must be >= 1")
        check(self.num_threads is None or self.num_threads >= 1, f"--num-threads must be >= 1, got {self.num_threads}")
        check(0 <= self.seed, f"--seed must be >= 0, got {self.seed}")
        check(self.snr_gamma is None or self.snr_gamma > 0, "--snr-gamma must be > 0")
        check(
            0 <= self.min_timestep < (self.max_timestep if self.max_timestep is not None else 10**6),
            f"--min-timestep {self.min_timestep} must be >= 0 and below --max-timestep {self.max_timestep}",
        )
        for name, lo, hi in FLOW_RANGES:
            value = getattr(self, name)
            check(
                value is None or lo <= value <= hi,
                f"--{name.replace('_', '-')} must be in [{lo:g}, {hi:g}], got {value}",
            )
        check(self.ema_decay is None or 0 < self.ema_decay < 1, "--ema-decay must be in (0, 1)")
        check(not (self.resume and self.overwrite), "--resume and --overwrite contradict each other; pick one")
        check(
            not (self.method == "controlnet" and self.train_text_encoder),
            "--method controlnet keeps the base model frozen; drop --train-text-encoder",
        )
        _check_prior_method(self)
        self.caption_extension = _caption_extension(self.caption_extension)
        self.output_name = _output_name(self.output_name, self.out)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_prior_method(cfg: FinetuneConfig) -> None:
    """What --method prior does not do, refused before anything loads."""
    check(cfg.image_encoder != "", "--image-encoder must name a CLIPVisionModelWithProjection folder")
    if cfg.method not in ("prior", "unclip"):
        check(cfg.image_encoder is None, "--image-encoder is for --method prior and --method unclip")
    if cfg.method != "prior":
        return
    for flag, on in (("--train-text-encoder", cfg.train_text_encoder), ("--buckets", cfg.buckets),
                     ("--validate-every", cfg.validate_every), ("--snr-gamma", cfg.snr_gamma is not None),
                     ("--noise-offset", cfg.noise_offset)):  # fmt: skip
        check(not on, f"--method prior does not take {flag} (it trains the prior alone, on image embeddings)")


def _caption_extension(ext: str) -> str:
    """'.txt' from 'txt' or '.txt'; refuse what cannot be a caption file's extension."""
    # Here, not at the top: it imports torch, which config.py must not pay for at start-up.
    from latentdiff.training.data.scan import IMAGE_EXTENSIONS

    ext = ext if ext.startswith(".") else "." + ext
    check(
        re.fullmatch(r"\.[A-Za-z0-9_][A-Za-z0-9_.-]*", ext) is not None,
        f"--caption-extension must look like .txt or .caption, got {ext!r}",
    )
    check(ext.lower() not in IMAGE_EXTENSIONS, f"--caption-extension {ext} is an image extension")
    return ext


def _output_name(name: str | None, out: str) -> str:
    """The kohya file's name: given (a trailing .safetensors dropped) or the run folder's; recorded in
    OUT/config.yaml, so a resumed or exported run keeps it even if the folder is renamed."""
    name = Path(out).resolve().name if name is None else name.removesuffix(".safetensors")
    check(
        bool(name) and not name.startswith(".") and not set(name) & set("/\\\0:") and len(name) <= 200,
        f"--output-name must be a plain file name (no folders, not hidden), got {name!r}",
    )
    check(
        name != "pytorch_lora_weights",
        "--output-name pytorch_lora_weights is the diffusers LoRA file's name; choose another",
    )
    return name
