"""The latent side of a ComfyUI API graph (images/comfy_graph.py reads the rest): the chain of sampler
nodes that ends in the decoded image (one KSampler, or KSamplerAdvanced nodes each continuing the last
one's latents: the base + refiner graph) and what the first starts from: an EmptyLatentImage, or a
LoadImage encoded by VAEEncode (with SetLatentNoiseMask) or VAEEncodeForInpaint, its mask a LoadImage's
alpha or a LoadImageMask's channel. Read into workflows/comfy_start.ComfyRun's fields; the picture files
are found from the flags (config/comfy_files.py)."""

from __future__ import annotations

from latentdiff.sampling.noise import MAX_NOISE_BATCH

SAMPLERS = ("KSampler", "KSamplerAdvanced")
CONDITIONING = "InpaintModelConditioning"  # prompts, picture and mask -> prompts with the picture, latent
ENCODERS = ("VAEEncode", "VAEEncodeForInpaint", CONDITIONING)
LATENTS = ("EmptyLatentImage", *ENCODERS, "SetLatentNoiseMask", *SAMPLERS)
PICTURE_NODES = ("LoadImage", "LoadImageMask", *ENCODERS, "SetLatentNoiseMask")  # the nodes of a picture start
RUN_KEYS = ("image", "mask", "encoding", "grow_mask_by", "noise_mask")  # what start() gives a run
MAX_STAGES = 16  # chained sampler nodes run (ComfyUI sets no limit; this bounds the work a graph asks)


def chain(g, last: str) -> list[str]:
    """The sampler nodes from the first to `last` (the decoded one), each fed the one before's latents."""
    keys = [last]
    while g.kind(at := g.link(keys[-1], "latent_image", LATENTS)) in SAMPLERS:
        g.link(keys[-1], "latent_image", SAMPLERS, 0)
        if at in keys:
            g.fail(f"its graph has a cycle through {g.kind(at)} node {at!r}")
        keys.append(at)
    if len(keys) > MAX_STAGES:
        g.fail(f"its graph chains {len(keys)} sampler nodes; latentdiff runs at most {MAX_STAGES}")
    others = [k for k in g.nodes if g.kind(k) in SAMPLERS and k not in keys]
    if others:
        g.fail(f"its graph has {len(others) + len(keys)} sampler nodes, not one chain to the decoded image")
    return keys[::-1]


def stage(g, key: str) -> dict:
    """A sampler node's stage (workflows/comfy_start.py's keys; the sampler and scheduler names ComfyUI's)."""
    out = {k: g.value(key, n, t) for k, n, t in (("steps", "steps", (int,)), ("cfg", "cfg", (int, float)))}
    out.update(sampler=g.value(key, "sampler_name", (str,)), scheduler=g.value(key, "scheduler", (str,)))
    if g.kind(key) == "KSampler":
        return {**out, "seed": g.value(key, "seed", (int,)), "denoise": g.value(key, "denoise", (int, float), 1.0)}
    switches = {k: _switch(g, key, name) for k, name in (("add_noise", "add_noise"), ("leftover", "return_with_leftover_noise"))}  # fmt: skip
    cuts = {"start": g.value(key, "start_at_step", (int,)), "end": g.value(key, "end_at_step", (int,))}
    return {**out, "seed": g.value(key, "noise_seed", (int,)), **switches, **cuts}


def _switch(g, key: str, name: str) -> bool:
    v = g.value(key, name, (str,))
    if v not in ("enable", "disable"):
        g.fail(f"{g.kind(key)} node {key!r}: {name} is {v[:40]!r}, not 'enable' or 'disable'")
    return v == "enable"


def partial(stage: dict) -> bool:
    """Whether a stage runs other than a whole KSampler from noise (then ComfyUI's own path runs it)."""
    cut = stage.get("start", 0) != 0 or stage.get("end", 10_000) < stage["steps"] or not stage.get("add_noise", True)
    return cut or stage.get("denoise", 1.0) != 1


def start(g, first: str, vae: str) -> dict:
    """What the first sampler starts from: {"width", "height", "batch"} of an empty latent, or the
    run's RUN_KEYS (file names as the graph gives them)."""
    at = g.link(first, "latent_image", LATENTS[:-2], 2 if _conditioned(g, first) else 0)
    masked = g.kind(at) == "SetLatentNoiseMask"
    if masked:
        mask = _mask(g, at)
        at = g.link(at, "samples", ENCODERS[:1], 0)
    if g.kind(at) == "EmptyLatentImage":
        batch = g.value(at, "batch_size", (int,))
        if not 1 <= batch <= MAX_NOISE_BATCH:
            g.fail(f"EmptyLatentImage's batch_size is {batch}; ComfyUI takes 1 to {MAX_NOISE_BATCH}")
        return {"width": g.value(at, "width", (int,)), "height": g.value(at, "height", (int,)), "batch": batch}
    output = 2 if g.kind(vae) == "CheckpointLoaderSimple" else 0
    if g.link(at, "vae", (g.kind(vae),), output) != vae:
        g.fail(f"its {g.kind(at)} node {at!r} encodes with another VAE than the one that decodes")
    image = _file(g, g.link(at, "pixels", ("LoadImage",), 0))
    if g.kind(at) == CONDITIONING:
        if _conditioned(g, first) != at:
            g.fail(f"its {CONDITIONING} node {at!r} gives the latent but not the prompts of the first sampler")
        flag = g.nodes[at].get("inputs", {}).get("noise_mask", True)
        if not isinstance(flag, bool):
            g.fail(f"{CONDITIONING} node {at!r}: noise_mask is {str(flag)[:40]!r}, not true or false")
        return {"image": image, "mask": _mask(g, at), "encoding": "model", "noise_mask": flag}
    if g.kind(at) == "VAEEncodeForInpaint":
        grow = g.value(at, "grow_mask_by", (int,), 6)
        if not 0 <= grow <= 64:
            g.fail(f"VAEEncodeForInpaint's grow_mask_by is {grow}; ComfyUI takes 0 to 64")
        return {"image": image, "mask": _mask(g, at), "encoding": "inpaint", "grow_mask_by": grow}
    return {"image": image, "mask": mask if masked else None, "encoding": "plain"}


def _conditioned(g, key: str) -> str | None:
    """The InpaintModelConditioning node sampler `key`'s prompts come through (None: none)."""
    at = g.nodes[key].get("inputs", {}).get("positive")
    target = str(at[0]) if isinstance(at, list) and at else None
    return target if target in g.nodes and g.kind(target) == CONDITIONING else None


def prompt(g, key: str, side: str) -> str:
    """The CLIPTextEncode node of sampler `key`'s `side` prompt, through an InpaintModelConditioning."""
    at = g.link(key, side, ("CLIPTextEncode", CONDITIONING))
    if g.kind(at) == CONDITIONING:
        g.link(key, side, (CONDITIONING,), ("positive", "negative").index(side))
        if at != _conditioned(g, key):
            g.fail(f"its first sampler's two prompts come through different {CONDITIONING} nodes")
        at, key = g.link(at, side, ("CLIPTextEncode",), 0), at
    g.link(key, side, ("CLIPTextEncode",), 0)
    return at


def _file(g, key: str) -> str:
    """The picture a LoadImage / LoadImageMask names, without ComfyUI's " [input]" folder annotation."""
    name = g.value(key, "image", (str,))
    return name[: -len(" [input]")] if name.endswith(" [input]") else name


def _mask(g, key: str) -> list:
    """[file, channel] of the mask input of node `key`: a LoadImage's alpha or a LoadImageMask's channel."""
    at = g.link(key, "mask", ("LoadImage", "LoadImageMask"))
    if g.kind(at) == "LoadImage":
        g.link(key, "mask", ("LoadImage",), 1)
        return [_file(g, at), "A"]
    g.link(key, "mask", ("LoadImageMask",), 0)
    channel = g.value(at, "channel", (str,), "alpha")
    if channel not in ("alpha", "red", "green", "blue"):
        g.fail(f"LoadImageMask node {at!r}: channel {channel[:20]!r} is not alpha, red, green or blue")
    return [_file(g, at), channel[0].upper()]
