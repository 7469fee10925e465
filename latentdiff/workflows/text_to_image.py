"""Text to image, one batch: the prompts conditioned, the loop run from where the workflow starts it,
the SDXL refiner's hand-off or the hires pass, the decode, and each image finished with its record.
`Pipeline.iter_images` calls `generate_batch` per batch; the pipeline is passed in, never imported."""

from __future__ import annotations

import torch

from latentdiff.config.params import hires_size
from latentdiff.config.request import Request
from latentdiff.errors import UsageError
from latentdiff.families.prompt_schedule import scheduled_conditioning
from latentdiff.formats.lora import describe
from latentdiff.formats.lora_tags import batch_tags, merged
from latentdiff.images.record import record
from latentdiff.images.write import a1111_line, to_pil
from latentdiff.runtime.memory import allocation_errors, images_at_once
from latentdiff.runtime.offload import release
from latentdiff.runtime.threads import generation_threads
from latentdiff.sampling.loop import denoise, make_scheduler, refiner_start_index, steps_before
from latentdiff.sampling.noise import COMFY_DEVICES
from latentdiff.workflows import a1111_path, comfy_path
from latentdiff.workflows.finish import finish
from latentdiff.workflows.hires import hires_pass, pass_steps
from latentdiff.workflows.image_prompt import adapters_installed, slot_tokens
from latentdiff.workflows.start import prepare
from latentdiff.workflows.unclip import image_stage, same_labels


def generate_all(pipe, request: Request):
    """Every image of `request`, batch by batch (as many at once as memory allows), as each is decoded."""
    jobs = request.jobs()
    c, most = pipe.components, min(pipe.max_batch, len(jobs))
    cfg = loop_guidance(pipe, request)[0] != 1.0
    batch = request.batch_size(images_at_once(c.unet, c.vae, request.width, request.height, cfg, most, pipe.device))
    with adapters_installed(pipe, request.image_prompts):
        for i in range(0, len(jobs), batch):
            yield from generate_batch(pipe, jobs[i : i + batch], request, i)


def generate_batch(pipe, jobs: list[tuple[str, int]], request: Request, first: int = 0):
    """Images of `jobs` (request.jobs()[first : first + len(jobs)]), each with its record."""
    a1111_path.check(pipe, request)
    comfy_path.check(pipe, request)
    texts, seeds = [j[0] for j in jobs], [j[1] for j in jobs]
    what = f"generating {len(texts)} image(s) of {request.width}x{request.height} on {pipe.device}"
    untagged, loras = batch_tags(texts, pipe.lora_dir) if request.prompt_syntax == "a1111" else (texts, [])
    with generation_threads(pipe), allocation_errors(what, "choose a smaller size"):
        with merged(pipe.components, loras, pipe.allow_pickle):
            pixels = sample(pipe, untagged, seeds, request, request.comfy_noise(first, len(jobs)))
    release(pipe.components)  # offloaded components back in RAM: the next batch starts from the text encoders
    out = []
    # the LoRAs of the prompt's tags, for A1111's "Lora hashes" (hashed once a batch)
    tagged = {"tag_loras": [describe(spec) for spec in loras]} if loras else {}
    for k, (image, text, s) in enumerate(zip(to_pil(pixels), texts, seeds)):
        image, extra = finish(pipe, image, text, s, request)
        info = {**record(pipe, request, text, s), **noise_record(request, first + k), **extra, **tagged}
        image.info["latentdiff"] = info
        image.info["parameters"] = a1111_line(info)
        out.append(image)
    return out


def loop_guidance(pipe, request: Request) -> tuple[float, float | None]:
    """(the loop's CFG scale, the guidance the model call embeds), as the model's family reads the request."""
    return pipe.family.guidance(pipe.components, request.guidance, request.true_cfg)


def noise_record(request: Request, job: int) -> dict:
    """What an image records of its noise: with ComfyUI's, its row of the batch (a replay of this image
    alone draws the same batch and takes that row)."""
    if request.noise not in COMFY_DEVICES:
        return {}
    batch = request.noise_batch or request.num_images
    run = {} if request.comfy_run is None else {"comfy_graph": request.comfy_run.record()}
    return {
        "noise": request.noise,
        "noise_batch": batch,
        "noise_index": request.noise_index + job % request.num_images,
        **run,
    }


def sample(pipe, texts: list[str], seeds: list[int], request: Request, comfy=None) -> torch.Tensor:
    if pipe.refiner is not None and request.a1111 is None and request.options is not None and request.options.hires:
        raise UsageError(
            "an SDXL refiner with the hires fix runs on A1111's own path: give an A1111 noise option (rng)"
        )
    texts = [pipe.addons.expand(t) for t in texts]
    cfg = loop_guidance(pipe, request)[0]
    negatives = [pipe.addons.expand(request.negative_prompt)] * len(texts) if cfg != 1.0 else None
    cond, uncond = condition(pipe, texts, negatives, request)
    cond, uncond, generators = image_stage(pipe, texts, seeds, request, cond, uncond)  # Stable unCLIP's
    src = request.source
    image, mask = (a1111_path.region(src) if request.a1111 else src.region()) if src is not None else (None, None)
    a1111_refiner = pipe.refiner is not None and request.a1111 is not None  # switches inside A1111's sampler
    comfy_refiner = pipe.refiner is not None and request.comfy_run is not None  # a ComfyUI graph's later stages
    hires = request.options is not None and request.options.hires
    # A1111's hires_fix_refiner_pass: "second" (its default), "first" or "both" passes switch to the refiner
    passes = request.options.hires_refiner_pass if hires else "first"
    first_refiner = a1111_refiner and passes in ("first", "both")
    first = a1111_path.refiner_switch(pipe, refiner_conditioning(pipe, texts, request)) if first_refiner else None
    refiner = {"refiner": first} if first is not None else {}
    if comfy_refiner:
        refiner = {"refiner_conds": refiner_conditioning(pipe, texts, request)}
    latents, gens = run_loop(
        pipe,
        cond,
        uncond,
        seeds,
        request,
        request.steps,
        (request.width, request.height),
        image=image,
        mask=mask,
        strength=request.strength or 1.0,
        with_generators=True,
        comfy=comfy,
        generators=generators,
        **refiner,
    )
    if comfy_refiner:
        return pipe.refiner.decode(latents)
    if first is not None and not hires:  # the model A1111 ended on decodes
        return (pipe.refiner if first.took_over else pipe).decode(latents)
    if pipe.refiner is not None and not a1111_refiner:
        return pipe.refiner.decode(refine(pipe, latents, texts, gens, request))
    if hires:
        # A1111 conditions its hires pass at the target size (its calculate_hr_conds; SDXL's size ids)
        at = (
            hires_size(request.width, request.height, request.options.hires, pipe.scale_factor)
            if request.a1111
            else None
        )
        conds = condition(pipe, texts, negatives, request, pass_steps(request), at)
        conds = same_labels(cond, conds[0]), same_labels(uncond, conds[1])  # Stable unCLIP's image embedding
        second = None
        if a1111_refiner and passes in ("second", "both"):
            second = a1111_path.refiner_switch(
                pipe, refiner_conditioning(pipe, texts, request, 0, pass_steps(request), at)
            )
        # the first pass decoded (for a pixel upscaler) by the model it ended on, A1111's loaded one
        return hires_pass(pipe, latents, *conds, texts, seeds, request, second, first is not None and first.took_over)
    return pipe.decode(latents)


def condition(pipe, texts: list[str], negatives, request: Request, hires_steps: int | None = None, size=None):
    """The prompts' (cond, uncond) contexts for this request's steps, or for its hires pass's (at `size`,
    (width, height): A1111's; None: the first pass's)."""
    width, height = size or (request.width, request.height)
    args = (texts, negatives, height, width, request.prompt_syntax, request.clip_skip)
    return scheduled_conditioning(pipe.conditioning, *args, request.steps, hires_steps)


def refiner_conditioning(pipe, texts: list[str], request: Request, offset: int = 0, hires_steps=None, size=None):
    """The refiner's (cond, uncond) for the request's steps (or its hires pass's, at `size` as
    `condition`), from step `offset` on."""
    negatives = [request.negative_prompt] * len(texts) if request.guidance != 1.0 else None
    width, height = size or (request.width, request.height)
    args = (texts, negatives, height, width, request.prompt_syntax, 1, request.steps, hires_steps)
    return scheduled_conditioning(pipe.refiner.conditioning, *args, offset=offset)


def refine(pipe, latents, texts, gens, request: Request) -> torch.Tensor:
    """The refiner's share of the timesteps, continuing this model's latents and generators."""
    r = pipe.refiner
    sched = make_scheduler(r.components.scheduler_config, request.scheduler, request.sampler_options)
    sched.set_timesteps(request.steps)  # on the CPU: see sampling.denoise
    start = refiner_start_index(sched, pipe.refiner_start)
    cond, uncond = refiner_conditioning(pipe, texts, request, start)
    return denoise(
        r.family.denoiser(r.components),
        sched,
        latents.to(r.device),
        cond,
        uncond,
        request.guidance,
        gens,
        r.progress_bar(len(texts)),
        start=start,
    )


def run_loop(
    pipe,
    cond,
    uncond,
    seeds: list[int],
    request: Request,
    steps: int,
    size: tuple[int, int],
    with_generators: bool = False,
    **start,
):
    """One run of the sampling loop at `size`, from noise or from the start `start` describes
    (see workflows.start.prepare): the one loop every workflow goes through, or A1111's own where
    the request asks for A1111's noise (workflows/a1111_path.py)."""
    if request.a1111 is not None:
        z = a1111_path.latents(pipe, cond, uncond, seeds, request, steps, size, loop_guidance(pipe, request)[0], start)
        return (z, []) if with_generators else z
    chosen = comfy_path.names(request) if start.get("comfy") is not None else None
    if chosen is not None:
        cfg = loop_guidance(pipe, request)[0]
        args = (
            steps,
            size,
            cfg,
            start["comfy"],
            chosen,
            request.callback,
            request.comfy_run,
            start.get("refiner_conds"),
        )
        z = comfy_path.latents(pipe, cond, uncond, *args)
        return (z, []) if with_generators else z
    sched = make_scheduler(pipe.components.scheduler_config, request.scheduler, request.sampler_options)
    pipe.family.set_timesteps(sched, steps, size, pipe.scale_factor)  # on the CPU: see sampling.denoise
    s = prepare(pipe, sched, seeds, steps, size, **start)
    # With a refiner, this model stops where the refiner takes over (and hands on its generators).
    end = steps_before(sched, pipe.refiner_start) if with_generators and pipe.refiner is not None else None
    units = tuple(u.residuals(len(sched.timesteps) - s.start, size) for u in request.controls)
    tokens, negative_tokens = slot_tokens(request.image_prompts, len(seeds))
    cfg, embedded = loop_guidance(pipe, request)
    options = pipe.family.guide_options(request.cfg_normalization, request.cfg_truncation)
    latents = denoise(
        pipe.family.denoiser(pipe.components, embedded, **options),
        sched,
        s.latents,
        s.inputs(cond, units, tokens),
        s.inputs(uncond, units, negative_tokens),
        cfg,
        s.generators,
        pipe.progress_bar(len(seeds)),
        start=s.start,
        end=end,
        blend=s.blend,
        callback=request.callback,
    )
    return (latents, s.generators) if with_generators else latents


def check_refiner(pipe, refiner, start: float) -> float:
    """`start` as a float, if `refiner` can take over `pipe`'s latents at that fraction of the denoising:
    an SDXL refiner whose latents match, strictly between 0 and 1; else one UsageError."""
    if not 0 < start < 1:
        raise UsageError(f"refiner start must be between 0 and 1 (exclusive), got {start}")
    unet_in = refiner.components.unet.config.in_channels
    if refiner.family.name != "sdxl" or unet_in != pipe.components.unet.config.in_channels:
        raise UsageError("the refiner must be an SDXL model whose latents match this model's")
    return float(start)
