"""`latentdiff generate`: prompts in, PNG files with their parameters out. Its flags are
GenerateConfig's fields (config/flags.py derives them; config/generate.py says what each means)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from latentdiff.config.generate import GenerateConfig


def add_parser(sub) -> None:
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.config.flags import add_flags

    p = sub.add_parser(
        "generate",
        help="make images from a text prompt",
        description="Make images from text. Prints each written PNG path on stdout.",
    )
    add_flags(p, GenerateConfig, say_defaults=False, none_word=False)
    p.set_defaults(func=run)


def run(args) -> int:
    # Before torch loads OpenMP: idle threads sleep instead of spinning. On a machine shared with
    # other jobs, spinning threads starved the working ones (steps up to 7x slower).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.runtime.signals import import_torch, interrupts_deferred

    with interrupts_deferred():
        import_torch()
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.formats.preflight import note

    recorded = None
    if getattr(args, "from_image", None):  # flags left out are absent from args
        from latentdiff.images.write import read_params  # PIL and torch: only with --from

        recorded = read_params(args.from_image)
    cfg, recorded_device = GenerateConfig.from_flags(vars(args), recorded, note)
    if recorded and recorded.get("a1111_model_hash"):
        from latentdiff.images.a1111_read import model_hash_note  # with --from only

        said = model_hash_note(recorded["a1111_model_hash"], cfg.model)
        if said:
            note(said)
    run_generate(cfg, recorded_device)
    return 0


def run_generate(cfg: GenerateConfig, recorded_device: str | None = None) -> list[Path]:
    """Render every prompt of `cfg`, writing each image as soon as it exists (so an interrupt
    loses at most the image in progress) and printing its path on stdout. Under `accelerate
    launch` each process renders its share of the images (latentdiff/runtime/sharding.py)."""
    import secrets

    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.formats.embeddings import embedding_files
    from latentdiff.formats.preflight import check_request, loading_line
    from latentdiff.images.write import save_png, slug
    from latentdiff.pipeline import Pipeline
    from latentdiff.runtime.device import resolve_device
    from latentdiff.runtime.files import check_out_dir
    from latentdiff.runtime.sharding import agree, my_shares, world
    from latentdiff.workflows.control import from_records
    from latentdiff.workflows.image_prompt import from_records as image_prompts_from_records
    from latentdiff.workflows.options import ImageOptions

    # Everything that can fail without the weights fails before they load: flags, files, the
    # model's own configs (sizes, steps, memory).
    options = ImageOptions.from_kwargs(cfg.image_options)
    options.preflight()
    check_out_dir(Path(cfg.out))
    check_request(cfg, options)
    controls = from_records(cfg.control_units())
    image_prompts, image_encoder = image_prompts_from_records(cfg.image_prompt_list(), cfg.allow_pickle)
    say = (lambda text: None) if cfg.quiet else (lambda text: print(f"latentdiff: {text}", file=sys.stderr, flush=True))

    rank, size = world()
    # One seed for the whole run (every prompt uses seeds S, S+1, ...), drawn once if random.
    seed, device = secrets.randbelow(2**32) if cfg.seed is None else cfg.seed, cfg.device
    if size > 1:  # the processes agree on rank 0's seed; each takes its launcher's device
        seed, device = agree(seed, device)
    dtype = cfg.dtype
    if recorded_device and resolve_device(device).type != recorded_device.split(":")[0]:
        dtype = "auto"  # a dtype recorded on another kind of device may not suit this one
    say(loading_line(cfg.model))
    pipe = Pipeline.from_pretrained(
        cfg.model,
        device=device,
        dtype=dtype,
        allow_pickle=cfg.allow_pickle,
        compile=cfg.compile,
        vae=cfg.vae,
        loras=cfg.loras,
        embeddings=cfg.embeddings + embedding_files(cfg.embedding_dir),
        lora_dir=cfg.lora_dir,
        components=cfg.components,
        text_encoders=cfg.text_encoders,
        offload=cfg.offload,
        speed=cfg.speed,
        calls=(cfg.steps or 25) * len(cfg.prompts) * cfg.num_images,  # UNet image-steps this run expects
    )
    if cfg.refiner is not None:
        say(loading_line(cfg.refiner, "loading the refiner"))
        refiner = Pipeline.from_pretrained(
            cfg.refiner, device=device, dtype=dtype, allow_pickle=cfg.allow_pickle, compile=cfg.compile
        )
        refiner.progress = not cfg.quiet
        pipe.set_refiner(refiner, 0.8 if cfg.refiner_start is None else cfg.refiner_start)
    pipe.progress = not cfg.quiet
    if cfg.num_threads is not None:  # the user's count instead of the per-call choice (runtime/threads.py)
        pipe.threads = cfg.num_threads
    written = []
    comfy = cfg.noise.startswith("comfy")  # ComfyUI's noise: every image has the seed; image k is row k of one batch
    for share in my_shares(cfg.prompts, cfg.num_images, rank, size):
        prompt = share.prompt
        first, noise = seed + share.first, dict(cfg.a1111_noise)
        if noise.get("variation_strength") and noise.get("variation_seed") is not None:  # A1111: the seed stays
            first, noise["variation_seed"] = seed, noise["variation_seed"] + share.first
        images = pipe.iter_images(
            prompt,
            negative_prompt=cfg.negative,
            steps=cfg.steps,
            guidance=cfg.guidance,
            width=cfg.width,
            height=cfg.height,
            seed=seed if comfy else first,
            num_images=share.count,
            scheduler=cfg.scheduler,
            schedule=cfg.schedule_type,
            eta=cfg.eta,
            s_noise=cfg.s_noise,
            clip_skip=cfg.clip_skip,
            prompt_syntax=cfg.prompt_syntax,
            true_cfg=cfg.true_cfg,
            cfg_normalization=cfg.cfg_normalization,
            cfg_truncation=cfg.cfg_truncation,
            controls=controls or None,
            control_mode=cfg.control_mode,
            image_prompts=image_prompts or None,
            image_encoder=image_encoder,
            noise=cfg.noise,
            variations=cfg.variations,
            noise_level=cfg.noise_level,
            prior=cfg.prior,
            prior_steps=cfg.prior_steps,
            prior_guidance=cfg.prior_guidance,
            noise_batch=cfg.noise_options.get("batch") or (cfg.num_images if comfy else None),
            noise_index=cfg.noise_options.get("index", 0) + (share.first if comfy else 0),
            comfy_graph=cfg.comfy_graph,
            **cfg.image_options,
            **noise,
        )
        for image in images:
            info = image.info["latentdiff"]
            row = f"-b{info['noise_index']}" if comfy else ""  # ComfyUI's noise: one seed, a row each
            path = save_png(image, Path(cfg.out), f"{slug(prompt)}-s{info['seed']}{row}")
            # One write per line: processes under `accelerate launch` share the pipe, and Python
            # writes print()'s text and its newline separately when stdout is unbuffered.
            sys.stdout.write(f"{path}\n")
            sys.stdout.flush()
            written.append(path)
    return written
