"""The bounds of a training run's sizes (issue 24): each size-like option has a fixed ceiling, checked
with the other values of the config, and the memory it would take is checked against what the machine
has before anything of that size is allocated.

The estimates follow runtime/memory.generation_bytes: deliberately low (activations only, a few
tensors per layer), so they refuse only what cannot fit; what they let through and still runs out of
memory ends in runtime/memory.allocation_errors's one line.
"""

from __future__ import annotations

from latentdiff.errors import UsageError
from latentdiff.runtime.memory import LIVE_TENSORS, check_fits

MAX_RESOLUTION = 8192  # 8x SDXL's 1024: past any model's training size; memory refuses far less
MAX_BATCH = 4096  # images a micro-step; the memory check usually refuses far less
MAX_GRAD_ACCUM = 4096  # micro-steps an optimizer step (time, not memory: they run one after another)
MAX_LORA_RANK = 4096  # the widest layer of any supported model is 5120 features (SDXL's 1280 x 4)
MAX_REPEATS = 10_000  # kohya's repeats are 1-100; an epoch also has MAX_EPOCH_SAMPLES
MAX_EPOCH_SAMPLES = 10_000_000  # the data order holds an epoch's samples as lists (EPOCH_SAMPLE_BYTES each)
MAX_TRAIN_STEPS = 10**9  # a billion optimizer steps is years of training
MAX_VALIDATION_PROMPTS = 256  # each is sampled every --validate-every steps
MAX_VALIDATION_STEPS = 10_000  # generate's own ceiling (config/params.MAX_STEPS)
MAX_EVAL_IMAGES = 1_000_000
MAX_THREADS = 1024

TRAIN_TENSORS = 8  # activations a level keeps for the backward pass: >= 2 resnets of >= 4 saved tensors
EPOCH_SAMPLE_BYTES = 100  # an int object and its places in the epoch's order and batch lists, with room
ADAPTER_BYTES = 16  # a trained fp32 parameter: weight, gradient and AdamW's two moments


def ceiling(label: str, value, most: int, why: str) -> None:
    """Refuse `value` above `most` in one line naming the option, the limit and `why`."""
    if value is not None and value > most:
        raise UsageError(f"{label} {value} is above {most:,}, the most a run takes: {why}")


def effective_batch(batch_size: int, repeats: list[int]) -> int:
    """The images a micro-step holds: a batch never spans epochs, so at most an epoch's samples."""
    return max(1, min(batch_size, sum(repeats)))


def _levels(config, default: int) -> list[int]:
    return [int(c) for c in (config.get("block_out_channels") or [default])]


def encode_bytes(vae_config, batch: int, resolution: int, nbytes: int) -> int:
    """The VAE encoding `batch` fp32 pixel tensors (no gradients): level i holds c_i channels at 1/2^i."""
    px = resolution * resolution
    widest = max(c * px / 4**i for i, c in enumerate(_levels(vae_config, 128)))
    return int(batch * (3 * px * 4 + LIVE_TENSORS * widest * nbytes))


def unet_train_bytes(unet_config, vae_config, batch: int, resolution: int, nbytes: int, checkpointing: bool) -> int:
    """Activations the UNet keeps for its backward pass (with gradient checkpointing: a block's worth)."""
    side = resolution // 2 ** (len(_levels(vae_config, 128)) - 1)
    held = sum(c * side * side / 4**i for i, c in enumerate(_levels(unet_config, 320)))
    return int(batch * held * (LIVE_TENSORS if checkpointing else TRAIN_TENSORS) * nbytes)


def step_bytes(
    unet_config,
    vae_config,
    batch: int,
    resolution: int,
    nbytes: int,
    checkpointing: bool,
    encode_batch=None,
    controlnet: bool = False,
) -> int:
    """Peak memory of a training step: encoding its pixels (or the caching pre-pass, `encode_batch`
    images at a time), then the UNet's forward and backward; the two do not overlap. A ControlNet
    (a copy of the UNet's encoder half) keeps half as much again, and its conditioning images."""
    encode = encode_bytes(vae_config, batch if encode_batch is None else encode_batch, resolution, nbytes)
    train = unet_train_bytes(unet_config, vae_config, batch, resolution, nbytes, checkpointing)
    if controlnet:
        train += train // 2 + batch * 3 * resolution * resolution * 4
    return max(encode, train)


def controlnet_params(unet) -> int:
    """The weights of a ControlNet made from `unet`: its input, embeddings, down and mid blocks (the
    conditioning embedding and zero convolutions are a few percent more, left out)."""
    named = ("conv_in", "time_embedding", "add_embedding", "class_embedding", "mid_block")
    parts = [getattr(unet, name, None) for name in named]  # diffusers sets no add_embedding without one
    return sum(p.numel() for m in (*parts, *unet.down_blocks) if m is not None for p in m.parameters())


def cache_bytes(vae_config, images: int, resolution: int, views: int) -> int:
    """Cached posteriors (mean and std, fp32) of every image, each view (mirrored or not)."""
    side = resolution // 2 ** (len(_levels(vae_config, 128)) - 1)
    return images * views * 2 * int(vae_config.get("latent_channels") or 4) * side * side * 4


def check_epoch(repeats: list[int]) -> None:
    """An epoch's samples (images x repeats) within MAX_EPOCH_SAMPLES and the memory their order takes."""
    samples = sum(repeats)
    if samples > MAX_EPOCH_SAMPLES:
        raise UsageError(
            f"an epoch of {samples:,} samples ({len(repeats):,} image(s) with their repeats) is more than "
            f"the data order holds (at most {MAX_EPOCH_SAMPLES:,}); lower --repeats or the N of N_name folders"
        )
    check_fits(samples * EPOCH_SAMPLE_BYTES, f"the order of an epoch of {samples:,} samples", "lower the repeats")


def vae_train_bytes(arch: dict, batch: int, resolution: int) -> int:
    """train-vae's step: encoder and decoder activations kept for the backward pass, fp32."""
    px = resolution * resolution
    levels = sum(c * px / 4**i for i, c in enumerate(_levels(arch, 64)))
    return int(batch * (2 * 3 * px * 4 + 2 * TRAIN_TENSORS * levels * 4))


# --- finetune: checked once the models are loaded, before the adapters, optimizer or batches ---------


def check_finetune(cfg, components, repeats: list[int], device, train_text: bool) -> None:
    """The LoRA rank against the model's layers and the memory, the step's memory at --resolution and
    --batch-size, and the cache's and the epoch order's memory on the CPU."""
    import torch

    if cfg.method == "lora":
        encoders = [components.text_encoder, components.text_encoder_2] if train_text else []
        check_lora_rank(cfg.lora_rank, components, [e for e in encoders if e is not None], device)
    controlnet = cfg.method == "controlnet"
    if controlnet:
        params = controlnet_params(components.unet)
        what = f"--method controlnet ({params:,} ControlNet weights with their gradients and AdamW's moments)"
        check_fits(params * ADAPTER_BYTES, what, "use a device with more memory, or --use-8bit-adam", device)
    check_epoch(repeats)
    nbytes = 4 if cfg.mixed_precision == "no" else 2
    batch = effective_batch(cfg.batch_size, repeats)
    cache = cfg.cache and cfg.crop == "center"
    encode_batch = (1 if device.type == "cpu" else 8) if cache else None
    unet, vae = components.unet.config, components.vae.config
    need = step_bytes(unet, vae, batch, cfg.resolution, nbytes, cfg.gradient_checkpointing, encode_batch, controlnet)
    what = f"a training step at --resolution {cfg.resolution} with --batch-size {cfg.batch_size}"
    if batch < cfg.batch_size:
        what += f" (an epoch's {batch} samples)"
    advice = "lower --resolution or --batch-size, or pass --gradient-checkpointing"
    check_fits(need, what, advice, device)
    if cache:
        stored = cache_bytes(vae, len(repeats), cfg.resolution, 2 if cfg.flip else 1)
        what = f"caching the latents of {len(repeats):,} image(s) at --resolution {cfg.resolution}"
        check_fits(stored, what, "lower --resolution, or pass --no-cache", torch.device("cpu"))


def _adapted(module, targets: list[str]):
    """(name, layer) of each linear layer peft adapts for `targets` (a name or a dotted suffix)."""
    for name, layer in module.named_modules():
        if any(name == t or name.endswith("." + t) for t in targets) and hasattr(layer, "in_features"):
            yield name, layer


def check_lora_rank(rank: int, components, encoders: list, device) -> None:
    """A rank above the smallest adapted layer's min(in, out) adds no capacity, only memory; and
    the adapters with their gradients and AdamW's moments must fit."""
    # Here, not at the top: they import torch, which config.py (importing this module) must not.
    from latentdiff.formats.lora_merge import TEXT_TARGETS
    from latentdiff.training.flow import lora_targets

    denoiser = _adapted(components.unet, lora_targets(components))
    layers = [*denoiser, *(x for e in encoders for x in _adapted(e, TEXT_TARGETS))]
    if not layers:
        return
    name, smallest = min(layers, key=lambda x: min(x[1].in_features, x[1].out_features))
    most = min(smallest.in_features, smallest.out_features)
    if rank > most:
        raise UsageError(
            f"--lora-rank {rank}: at most {most}, the smallest adapted layer's min(in, out) features "
            f"({name}: {smallest.in_features} -> {smallest.out_features}); a larger rank adds no capacity, only memory"
        )
    params = sum(rank * (layer.in_features + layer.out_features) for _, layer in layers)
    check_fits(params * ADAPTER_BYTES, f"--lora-rank {rank} ({params:,} adapter weights)", "lower --lora-rank", device)


# field: (ceiling, why), for FinetuneConfig (flags --field-name) and VaeTrainConfig (field names)
MAX_TIMESTEPS = 10_000  # released DDPM models train on 1,000
CEILINGS = {
    "resolution": (MAX_RESOLUTION, "8x SDXL's training size (the memory check usually refuses less)"),
    "batch_size": (MAX_BATCH, "images a micro-step holds (the memory check usually refuses less)"),
    "grad_accum": (MAX_GRAD_ACCUM, "micro-steps an optimizer step; raise --batch-size instead"),
    "lora_rank": (MAX_LORA_RANK, "wider than any adapted layer of a supported model"),
    "repeats": (MAX_REPEATS, f"an epoch holds at most {MAX_EPOCH_SAMPLES:,} samples"),
    "max_steps": (MAX_TRAIN_STEPS, "years of training"),
    "warmup_steps": (MAX_TRAIN_STEPS, "years of training"),
    "validation_steps": (MAX_VALIDATION_STEPS, "generate's own ceiling"),
    "eval_train_images": (MAX_EVAL_IMAGES, "images measured at the end of the run"),
    "num_threads": (MAX_THREADS, "CPU threads"),
    "min_timestep": (MAX_TIMESTEPS, "10x the noise schedule of any released model"),
    "max_timestep": (MAX_TIMESTEPS, "10x the noise schedule of any released model"),
}


def check_ceilings(cfg, flags: bool) -> None:
    """Each CEILINGS field `cfg` has, named as its flag (`flags`) or as its field."""
    for name, (most, why) in CEILINGS.items():
        if hasattr(cfg, name):
            ceiling(f"--{name.replace('_', '-')}" if flags else name, getattr(cfg, name), most, why)
    prompts = getattr(cfg, "validation_prompts", [])
    if len(prompts) > MAX_VALIDATION_PROMPTS:
        raise UsageError(
            f"{len(prompts):,} validation prompts: at most {MAX_VALIDATION_PROMPTS} are sampled (each one "
            "every --validate-every steps); keep a few that show what the run learns"
        )


# train-vae's `vae:` section (AutoencoderKL arguments): SD's VAE has 4 levels of 128-512 channels, 2 layers each
MAX_VAE_LEVELS = 8  # each level halves the image: 2^7 = 128x smaller
MAX_VAE_CHANNELS = 4096  # 8x SD's widest level
MAX_VAE_LAYERS = 16  # resnets a level; SD has 2
MAX_LATENT_CHANNELS = 64  # SD has 4, SD3 and FLUX 16


def _whole(label: str, value, most: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{label} {value!r:.100} is not a whole number")
    if value < 1:
        raise UsageError(f"{label} {value} must be at least 1")
    ceiling(label, value, most, "far past any released model's")


def check_vae_arch(arch: dict) -> None:
    """The sizes of the AutoencoderKL train-vae builds, before anything is built: whole numbers within
    fixed ceilings (its weights' memory is checked by check_vae)."""
    levels = arch.get("block_out_channels", [64])
    if not isinstance(levels, (list, tuple)) or not 1 <= len(levels) <= MAX_VAE_LEVELS:
        raise UsageError(
            f"vae: block_out_channels must be a list of 1 to {MAX_VAE_LEVELS} channel counts (one a level, "
            f"each halving the image), got {levels!r:.100}"
        )
    for c in levels:
        _whole("vae: block_out_channels entry", c, MAX_VAE_CHANNELS)
    for key, most in (("layers_per_block", MAX_VAE_LAYERS), ("latent_channels", MAX_LATENT_CHANNELS)):
        if key in arch:
            _whole(f"vae: {key}", arch[key], most)
    for key in ("in_channels", "out_channels"):
        if arch.get(key, 3) != 3:
            raise UsageError(f"vae: {key} must be 3 (train-vae's images are RGB), got {arch[key]!r:.100}")


def check_vae(cfg, images: int, device, params: int = 0) -> None:
    """train-vae decodes every image into one uint8 tensor (CPU), then steps at batch_size."""
    import torch

    res = cfg.resolution
    what = f"holding {images:,} image(s) at resolution {res} in memory"
    check_fits(images * 3 * res * res, what, "lower resolution", torch.device("cpu"))
    what = f"the VAE's {params:,} weights with their gradients and AdamW's moments"
    check_fits(params * ADAPTER_BYTES, what, "narrow block_out_channels or lower layers_per_block", device)
    what = f"a train-vae step at resolution {res} with batch_size {cfg.batch_size}"
    check_fits(vae_train_bytes(cfg.vae, cfg.batch_size, res), what, "lower resolution or batch_size", device)
