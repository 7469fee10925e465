"""`VaeTrainConfig`: the options of `latentdiff train-vae` (YAML files in configs/vae/ mirror
them), checked as they are set so a bad value is one clear line, not a failure inside torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from latentdiff.errors import UsageError

RUN_ENTRIES = ("checkpoints", "vae", "metrics.jsonl", "eval.json", "config.yaml", "skipped.txt")
# Options that may change between a run and its --resume without changing what was trained.
RESUMABLE = {"dataset", "out", "config", "max_steps", "checkpoint_every", "keep_checkpoints",
             "log_every", "eval_train_images", "resume", "overwrite", "num_threads"}
_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "dict": dict}


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
    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    lr_schedule: str = "cosine"
    """'cosine' (decay to 0 at max_steps) or 'constant', each after a linear warm-up."""
    warmup_steps: int = 100
    resolution: int = 64
    """Images are resized to cover and centre-cropped to this square size."""
    kl_weight: float = 1e-6
    """Weight of KL(posterior || N(0, I)) averaged per latent element; L1 and MSE weigh 1."""
    max_grad_norm: float = 1.0
    seed: int = 0
    """Seeds the initial weights, the batch order and the posterior noise."""
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 25
    """Steps between rows of metrics.jsonl."""
    eval_train_images: int = 512
    """How many training images (evenly spaced) the train-split PSNR is measured on."""
    resume: bool = False
    """Continue from the latest complete checkpoint in `out`."""
    overwrite: bool = False
    """Delete the run already in `out` and start again."""
    mixed_precision: str = "no"
    """'no' (fp32) or 'bf16' (autocast; weights and optimizer stay fp32)."""
    num_threads: int | None = None
    """CPU threads for torch (None: torch's default, one per core). On a CPU shared with other
    jobs 1 can be much faster than 2: a preempted thread stalls every parallel op."""

    def __post_init__(self):
        _check_types(self)
        _check(bool(self.dataset), "no dataset given: pass the folder of training images")
        _check(bool(self.out), "no output folder given: pass --out DIR")
        _check(bool(self.vae), "no VAE architecture: pass --config with a `vae:` section of "
                               "AutoencoderKL arguments (e.g. configs/vae/emoji.yaml)")
        for name in ("max_steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every",
                     "resolution", "eval_train_images"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(self.kl_weight >= 0, f"kl_weight must be >= 0, got {self.kl_weight}")
        _check(self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        _check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        _check(self.num_threads is None or self.num_threads >= 1, f"num_threads must be >= 1, got {self.num_threads}")
        _check(self.lr_schedule in ("cosine", "constant"),
               f"lr_schedule must be 'cosine' or 'constant', not {self.lr_schedule!r}")
        _check(self.mixed_precision in ("no", "bf16"),
               f"mixed_precision must be 'no' or 'bf16', not {self.mixed_precision!r}")
        _check(not (self.resume and self.overwrite), "--resume and --overwrite contradict; pick one")
        factor = 2 ** (len(self.vae.get("block_out_channels", (64,))) - 1)
        _check(self.resolution % factor == 0, f"resolution {self.resolution} is not a multiple of "
               f"the VAE's downsampling factor {factor}")


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise UsageError(msg)


def _check_types(cfg) -> None:
    """YAML happily yields strings for `1e-3` or `yes`; say so instead of failing inside torch."""
    for f in dataclasses.fields(cfg):
        value, want = getattr(cfg, f.name), _TYPES.get(str(f.type).split(" |")[0])
        if want is None or (value is None and "None" in str(f.type)):
            continue
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(cfg, f.name, float(value))
        elif not isinstance(value, want) or (want is int and isinstance(value, bool)):
            hint = " (YAML reads 1e-3 as text; write 1.0e-3)" if want is float else ""
            raise UsageError(f"{f.name} must be {want.__name__}, got {value!r}{hint}")
