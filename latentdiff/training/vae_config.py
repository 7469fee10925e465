"""`VaeTrainConfig`: the options of `latentdiff train-vae` (YAML files in configs/vae/ mirror
them), checked as they are set so a bad value is one clear line, not a failure inside torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from latentdiff.config.common import check
from latentdiff.config.flags import check_types
from latentdiff.training.bounds import check_ceilings, check_vae_arch
from latentdiff.training.lr_schedule import SCHEDULES
from latentdiff.training.trackers import REPORT_TO

# Everything a train-vae run writes into OUT (run.json lists them); --overwrite removes only these.
RUN_ENTRIES = ("checkpoints", "vae", "metrics.jsonl", "eval.json", "config.yaml", "skipped.txt", "logs")


@dataclass
class VaeTrainConfig:
    """Everything `train-vae` needs. YAML files in configs/vae/ mirror these fields."""

    dataset: str = ""
    """Image folder (+ metadata.jsonl). Rows with split=heldout are only used for evaluation."""
    out: str = ""
    """Run folder: checkpoints/, vae/ (the model), metrics.jsonl, eval.json, config.yaml."""
    vae: dict = field(default_factory=dict)
    """AutoencoderKL keyword arguments: the `vae:` section of the YAML."""
    config: str | None = None
    """The YAML file these values came from (recorded, not read again)."""
    max_steps: int = 1000
    """Optimizer steps in total (a resumed run continues up to this)."""
    batch_size: int = 32
    """Images per step."""
    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    lr_schedule: str = "cosine"
    """LR schedule after warmup_steps of linear warm-up (diffusers' get_scheduler set)."""
    warmup_steps: int = 100
    """Steps of linear warm-up from 0 to lr."""
    resolution: int = 64
    """Images are resized to cover and centre-cropped to this square size."""
    kl_weight: float = 1e-6
    """Weight of KL(posterior || N(0, I)) averaged per latent element; L1 and MSE weigh 1."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this norm."""
    seed: int = 0
    """Seeds the initial weights, the batch order and the posterior noise."""
    checkpoint_every: int = 500
    """Steps between checkpoints."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept; older ones are deleted once a newer one is complete."""
    log_every: int = 25
    """Steps between rows of metrics.jsonl (and tracker logs)."""
    report_to: str = "none"
    """Also log the loss parts, lr and images/s to tensorboard (OUT/logs) or wandb."""
    eval_train_images: int = 512
    """How many training images (evenly spaced) the train-split PSNR is measured on."""
    resume: bool = False
    """Continue from the latest complete checkpoint in `out`, with its saved recipe."""
    change_recipe: bool = False
    """With --resume: accept values that differ from the saved recipe (otherwise refused)."""
    follow_symlinks: bool = False
    """Use dataset files reached through symlinks that point outside the dataset folder."""
    overwrite: bool = False
    """Delete the run already in `out` and start again."""
    mixed_precision: str = "no"
    """'no' (fp32) or 'bf16' (autocast; weights and optimizer stay fp32)."""
    num_threads: int | None = None
    """CPU threads for torch (default: 1 on the CPU for models under 50M parameters, such as the
    shipped one, where a second thread made each step slower (benchmarks/train_threads.py); else
    torch's own, one per core)."""

    required = ("out",)
    choices = {"lr_schedule": SCHEDULES, "mixed_precision": ("no", "bf16"), "report_to": REPORT_TO}

    def __post_init__(self):
        check_types(self)
        check(bool(self.dataset), "no dataset given: pass the folder of training images")
        check(bool(self.out), "no output folder given: pass --out DIR")
        check(
            bool(self.vae),
            "no VAE architecture: pass --config with a `vae:` section of "
            "AutoencoderKL arguments (e.g. configs/vae/emoji.yaml)",
        )
        for name in (
            "max_steps",
            "batch_size",
            "checkpoint_every",
            "keep_checkpoints",
            "log_every",
            "resolution",
            "eval_train_images",
        ):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check_ceilings(self, flags=False)
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        check(self.kl_weight >= 0, f"kl_weight must be >= 0, got {self.kl_weight}")
        check(self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        check(self.num_threads is None or self.num_threads >= 1, f"num_threads must be >= 1, got {self.num_threads}")
        check(not (self.resume and self.overwrite), "--resume and --overwrite contradict; pick one")
        check_vae_arch(self.vae)
        factor = 2 ** (len(self.vae.get("block_out_channels", (64,))) - 1)
        check(
            self.resolution % factor == 0,
            f"resolution {self.resolution} is not a multiple of the VAE's downsampling factor {factor}",
        )
