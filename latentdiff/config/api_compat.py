"""What diffusers users write, understood by the Python API: diffusers' keyword names for the same
parameters, `generator=` where it maps exactly onto a seed, and `Pipeline.to(device, dtype)`."""

from __future__ import annotations

import latentdiff.config.params as params
from latentdiff.errors import UsageError

# diffusers' name -> ours (negative_prompt, width, height, strength, image, clip_skip are the same)
DIFFUSERS_NAMES = {
    "num_inference_steps": "steps",
    "guidance_scale": "guidance",
    "num_images_per_prompt": "num_images",
    "mask_image": "mask",
}
CALL_NAMES = (
    "prompt",
    "negative_prompt",
    "steps",
    "guidance",
    "width",
    "height",
    "seed",
    "num_images",
    "scheduler",
    "callback",
    "clip_skip",
    "prompt_syntax",
)
_DEFAULTS = {"steps": None, "guidance": None, "num_images": 1, "mask": None}
_SEED_HINT = (
    "pass seed=N instead: image k of a call uses a CPU generator seeded N + k (as diffusers "
    "does with generator=[torch.Generator('cpu').manual_seed(N + k) for each image k])"
)


def our_names(named: dict, options: dict, image_options: set[str]) -> tuple[dict, dict]:
    """`named` (our arguments of Pipeline.__call__) and `options` (the other keywords) with
    diffusers' names put in our places; an unknown name is refused, naming ours."""
    named, options = dict(named), dict(options)
    for theirs, ours in DIFFUSERS_NAMES.items():
        if theirs not in options:
            continue
        where = named if ours in named else options
        if where.get(ours, _DEFAULTS[ours]) != _DEFAULTS[ours]:
            raise UsageError(f"give {ours} or {theirs}, not both")
        where[ours] = options.pop(theirs)
    if "generator" in options:
        generator = options.pop("generator")
        if generator is not None:
            if named.get("seed") not in (0, None):
                raise UsageError("give seed or generator, not both")
            named["generator"] = generator
    unknown = sorted(set(options) - image_options)
    if unknown:
        raise UsageError(
            f"unknown option(s): {', '.join(unknown)}; Pipeline takes {', '.join(CALL_NAMES)}, the "
            f"image options {', '.join(sorted(image_options))} (latentdiff.workflows.options) and "
            f"diffusers' {', '.join(DIFFUSERS_NAMES)}, generator"
        )
    return named, options


def call_arguments(n_prompts: int, steps, guidance, seed, num_images, options: dict, image_options: set[str]):
    """(steps, guidance, seed, num_images, image options) of a call written with our names or
    diffusers' (`generator` becomes the seed it stands for)."""
    named, options = our_names(
        dict(steps=steps, guidance=guidance, seed=seed, num_images=num_images), options, image_options
    )
    if "generator" in named:
        images = n_prompts * params.num_images(params.api_label, named["num_images"])
        named["seed"] = generator_seed(named["generator"], images)
    return named["steps"], named["guidance"], named["seed"], named["num_images"], options


def generator_seed(generator, images: int) -> int:
    """The seed that gives exactly the images `generator` would give in diffusers: a fresh CPU
    torch.Generator for one image, or one fresh CPU generator per image with seeds s, s+1, ...
    Anything else cannot be followed exactly and is refused in one line naming `seed`."""
    import torch

    gens = list(generator) if isinstance(generator, (list, tuple)) else [generator]
    if not gens or not all(isinstance(g, torch.Generator) for g in gens):
        raise UsageError(f"generator must be a torch.Generator or a list of them; {_SEED_HINT}")
    seeds = [g.initial_seed() for g in gens]
    why, devices = None, [g.device for g in gens if g.device.type != "cpu"]
    if devices:
        why = f"a generator on {devices[0]} draws other numbers than a CPU one"
    elif not all(_fresh(g) for g in gens):
        why = "a generator that has already drawn numbers cannot be replayed"
    elif not isinstance(generator, (list, tuple)) and images > 1:
        why = f"one generator for {images} images draws them from one stream"
    elif len(gens) != images:
        why = f"{len(gens)} generators for {images} images"
    elif seeds != list(range(seeds[0], seeds[0] + images)):
        why = f"the generators' seeds {seeds[:4]} are not consecutive"
    if why:
        raise UsageError(f"generator: {why}; {_SEED_HINT}")
    return seeds[0]


def _fresh(g) -> bool:
    import torch

    return torch.equal(g.get_state(), torch.Generator("cpu").manual_seed(g.initial_seed()).get_state())


def move(pipe, device=None, dtype=None):
    """`Pipeline.to`: every loaded module on `device` in the compute `dtype` (the VAE in fp32 where
    its config asks to be upcast, as at load time); the refiner and loaded upscalers follow."""
    import torch

    # Here, not at the top: they import torch, which api_compat.py (read by the CLI) must not pay for at start-up.
    from latentdiff.runtime.device import DTYPES, resolve_device, resolve_dtype, unpack_cpu_weights
    from latentdiff.runtime.placement import cpu_dtype_pref

    if pipe.compiled or getattr(pipe, "offload", "none") != "none":
        what = "a compiled" if pipe.compiled else "an offloaded"
        raise UsageError(f"{what} pipeline cannot be moved; load it with device=..., dtype=... instead")
    if device is not None and not isinstance(device, torch.device):
        device = params.device(params.api_label, device)
    dev = pipe.device if device is None else resolve_device(str(device))
    if dtype is None:
        target = pipe.dtype
    elif isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise UsageError(f"dtype {dtype} is not one of torch.float32, torch.float16, torch.bfloat16")
        target = dtype
    else:
        name = params.choice(params.api_label, "dtype", dtype, params.DTYPE_NAMES)
        n_params = sum(p.numel() for p in pipe.components.unet.parameters())
        target = resolve_dtype(name, dev, cpu_dtype_pref(pipe.components.defaults, n_params))
    c = pipe.components
    for module in (c.unet, c.vae, *c.text_encoders()):
        unpack_cpu_weights(module)  # the oneDNN copies belong to the old placement
        module.to(memory_format=torch.contiguous_format)
    pipe.place_on(dev, target)
    for other in [pipe.refiner, *pipe.upscalers.values()]:
        if other is not None:
            other.to(dev, target)
    return pipe
