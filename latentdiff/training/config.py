"""`FinetuneConfig`: every knob of `latentdiff finetune`, validated once, saved with the run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import UsageError


@dataclass
class FinetuneConfig:
    dataset: str = ""
    """Folder of images with captions (.txt beside each image, metadata.jsonl or metadata.csv)."""
    model: str | None = None
    """Base model (directory or hub id) or an architecture YAML (configs/models/*.yaml) to train from scratch."""
    out: str = ""
    """Run folder: checkpoints, samples, metrics, config.yaml and the final model."""
    method: str = "lora"
    """lora (low-rank adapters on attention) or full (all UNet weights, with EMA)."""
    max_steps: int = 1000
    """Optimizer steps; may be raised when resuming."""
    batch_size: int = 4
    """Images per process per micro-step; the global batch is batch_size x processes x grad_accum."""
    grad_accum: int = 1
    lr: float = 1e-4
    lr_schedule: str = "constant"
    """constant or cosine (both after warmup_steps of linear warm-up)."""
    warmup_steps: int = 0
    weight_decay: float = 1e-2
    resolution: int = 512
    crop: str = "center"
    """center or random (random crops disable latent caching, as each epoch sees new pixels)."""
    flip: bool = False
    buckets: bool = False
    """Aspect-ratio bucketing instead of square crops."""
    lora_rank: int = 8
    train_text_encoder: bool = False
    caption_dropout: float = 0.1
    """Probability of training on the empty caption, which is what makes CFG work."""
    missing_captions: str = "error"
    """error or empty (train uncaptioned images unconditionally)."""
    snr_gamma: float | None = None
    """Min-SNR-gamma loss weighting (Hang et al. 2023); 5.0 is the paper's choice."""
    noise_offset: float = 0.0
    ema_decay: float | None = 0.9999
    """EMA of trained weights for full fine-tuning (None disables it)."""
    mixed_precision: str = "no"
    """no, fp16 or bf16: the compute dtype; trainable weights always stay fp32."""
    gradient_checkpointing: bool = False
    use_8bit_adam: bool = False
    cache: bool = True
    """Encode images (and captions, when the text encoder is frozen) once before training."""
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    validate_every: int = 0
    """0 disables validation images."""
    validation_prompts: list[str] = dataclasses.field(default_factory=list)
    validation_steps: int | None = None
    log_every: int = 10
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    allow_pickle: bool = False
    sample_defaults: dict = dataclasses.field(default_factory=dict)
    """Recommended sampling settings written into the output model's latentdiff.json."""

    def __post_init__(self):
        def need(ok, msg):
            if not ok:
                raise UsageError(msg)

        need(bool(self.dataset), "a DATASET folder is required")
        need(bool(self.out), "--out DIR is required")
        need(self.model is not None, "--model is required (a model directory, hub id, or configs/models/*.yaml)")
        need(self.method in ("lora", "full"), f"--method must be lora or full, got {self.method!r}")
        for name in ("max_steps", "batch_size", "grad_accum", "lora_rank", "checkpoint_every", "keep_checkpoints", "log_every"):
            need(int(getattr(self, name)) >= 1, f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        need(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        need(self.resolution >= 8 and self.resolution % 8 == 0, f"--resolution must be a multiple of 8, got {self.resolution}")
        need(0.0 <= self.caption_dropout < 1.0, f"--caption-dropout must be in [0, 1), got {self.caption_dropout}")
        need(self.mixed_precision in ("no", "fp16", "bf16"), f"--mixed-precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        need(self.crop in ("center", "random"), f"crop must be center or random, got {self.crop!r}")
        need(self.lr_schedule in ("constant", "cosine"), f"lr_schedule must be constant or cosine, got {self.lr_schedule!r}")
        need(self.missing_captions in ("error", "empty"), "--missing-captions must be error or empty")
        need(self.validate_every >= 0 and self.warmup_steps >= 0, "--validate-every and warmup_steps must be >= 0")
        need(self.snr_gamma is None or self.snr_gamma > 0, "snr_gamma must be > 0")
        need(self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay must be in (0, 1)")
        need(not (self.resume and self.overwrite), "--resume and --overwrite contradict each other; pick one")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
