"""`ClipTrainConfig`: the options of `latentdiff train-clip` (configs/clip/*.yaml mirror them), checked
as they are set so a bad value is one clear line, not a failure inside torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from latentdiff.config.common import check
from latentdiff.config.flags import check_types
from latentdiff.errors import UsageError
from latentdiff.training.bounds import ceiling, check_ceilings
from latentdiff.training.lr_schedule import SCHEDULES
from latentdiff.training.trackers import REPORT_TO

# Everything a train-clip run writes into OUT (run.json lists them); --overwrite removes only these.
RUN_ENTRIES = (
    "checkpoints",
    "image_encoder",
    "text_encoder",
    "tokenizer",
    "feature_extractor",
    "metrics.jsonl",
    "eval.json",
    "config.yaml",
    "skipped.txt",
    "logs",
)
# A ViT for 64 px renders: 8x8 patches (64 tokens + the class token), 4 layers of width 128 (0.86M weights with the projection).
VISION = dict(patch_size=8, hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4)
MAX_WIDTH = 8192  # ViT-bigG is 1664 wide
MAX_LAYERS = 64  # ViT-bigG has 48
MAX_PROJECTION = 8192


@dataclass
class ClipTrainConfig:
    """Everything `train-clip` needs. YAML files in configs/clip/ mirror these fields."""

    dataset: str = ""
    """Image folder (+ metadata.jsonl; its alt_texts are more captions). Rows with split=heldout are
    only used for the retrieval evaluation."""
    model: str = ""
    """Model folder whose text_encoder/ (a CLIPTextModel) and tokenizer/ the image tower learns to match."""
    out: str = ""
    """Run folder: checkpoints/, image_encoder/, text_encoder/, tokenizer/, feature_extractor/, eval.json."""
    vision: dict = field(default_factory=lambda: dict(VISION))
    """CLIPVisionConfig keyword arguments of the image tower (image_size is --resolution)."""
    config: str | None = None
    """The YAML file these values came from (recorded, not read again)."""
    projection_dim: int = 256
    """Width of the shared embedding both towers project into (the image embedding a prior predicts)."""
    train_text: bool = False
    """Fine-tune the text tower too (at --text-lr); by default it is frozen and only its projection learns."""
    text_lr: float = 1e-5
    """Peak learning rate of the text tower's own weights with --train-text."""
    alt_captions: bool = True
    """Draw each image's caption every step among `text` and its metadata alt_texts (else `text` only)."""
    max_steps: int = 1000
    """Optimizer steps in total (a resumed run continues up to this)."""
    batch_size: int = 128
    """Image-caption pairs per step: each image's negatives are the other captions of its batch."""
    lr: float = 1e-3
    """Peak learning rate of AdamW (image tower, projections, temperature)."""
    weight_decay: float = 0.05
    """AdamW's decoupled weight decay."""
    lr_schedule: str = "cosine"
    """LR schedule after warmup_steps of linear warm-up (diffusers' get_scheduler set)."""
    warmup_steps: int = 50
    """Steps of linear warm-up from 0 to lr."""
    resolution: int = 64
    """Images are resized to cover and centre-cropped to this square size (the tower's image_size)."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this norm."""
    seed: int = 0
    """Seeds the initial weights, the batch order and the caption draws."""
    checkpoint_every: int = 250
    """Steps between checkpoints."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept; older ones are deleted once a newer one is complete."""
    log_every: int = 25
    """Steps between rows of metrics.jsonl (and tracker logs)."""
    report_to: str = "none"
    """Also log the loss, temperature, lr and images/s to tensorboard (OUT/logs) or wandb."""
    eval_train_images: int = 512
    """How many training images (evenly spaced) the train-split retrieval is measured on."""
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
    """CPU threads for torch (default: 1 on the CPU for models under 50M parameters, else one per core)."""

    required = ("out", "model")
    choices = {"lr_schedule": SCHEDULES, "mixed_precision": ("no", "bf16"), "report_to": REPORT_TO}

    def __post_init__(self):
        check_types(self)
        check(bool(self.dataset), "no dataset given: pass the folder of training images")
        check(bool(self.out), "no output folder given: pass --out DIR")
        check(bool(self.model), "no model given: pass --model DIR, a model folder with a text_encoder/")
        for name in ("max_steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every", "resolution"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.batch_size >= 2, "batch_size must be >= 2: each pair's negatives are the rest of its batch")
        check(self.eval_train_images >= 0, f"eval_train_images must be >= 0, got {self.eval_train_images}")
        check_ceilings(self, flags=False)
        for name in ("lr", "text_lr", "max_grad_norm"):
            check(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        check(self.num_threads is None or self.num_threads >= 1, f"num_threads must be >= 1, got {self.num_threads}")
        check(not (self.resume and self.overwrite), "--resume and --overwrite contradict; pick one")
        _whole("projection_dim", self.projection_dim, MAX_PROJECTION)
        check_vision_arch(self.vision, self.resolution)


def _whole(label: str, value, most: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{label} {value!r:.100} is not a whole number >= 1")
    ceiling(label, value, most, "far past any released CLIP's")


def check_vision_arch(arch: dict, resolution: int) -> None:
    """The sizes of the image tower before anything is built: whole numbers within fixed ceilings,
    patches that tile the image and heads that divide the width."""
    unknown = sorted(str(k) for k in set(arch) - _VISION_KEYS)
    check(not unknown, f"vision: unknown CLIPVisionConfig field(s) {', '.join(unknown)[:200]}")
    for key, most in (
        ("patch_size", 1024),
        ("hidden_size", MAX_WIDTH),
        ("intermediate_size", 4 * MAX_WIDTH),
        ("num_hidden_layers", MAX_LAYERS),
        ("num_attention_heads", MAX_WIDTH),
    ):
        _whole(f"vision: {key}", arch.get(key, VISION[key]), most)
    patch, width = arch.get("patch_size", VISION["patch_size"]), arch.get("hidden_size", VISION["hidden_size"])
    check(
        resolution % patch == 0,
        f"resolution {resolution} is not a multiple of vision: patch_size {patch}; the patches must tile the image",
    )
    heads = arch.get("num_attention_heads", VISION["num_attention_heads"])
    check(width % heads == 0, f"vision: hidden_size {width} is not a multiple of num_attention_heads {heads}")


# CLIPVisionConfig's fields a recipe may set (image_size comes from --resolution, projection_dim from its own field).
_VISION_KEYS = frozenset(
    {*VISION, "hidden_act", "layer_norm_eps", "attention_dropout", "initializer_range", "initializer_factor"}
)
