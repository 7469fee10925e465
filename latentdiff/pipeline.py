"""`latentdiff.Pipeline`: load a model, turn prompts into images, save the model."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import torch

import latentdiff.models.checks as model_checks
import latentdiff.config.params as params
from latentdiff.errors import UsageError
from latentdiff.images.write import a1111_line, to_pil
from latentdiff.runtime.memory import allocation_errors
from latentdiff.models.components import Components, save_components, vae_scale_factor
from latentdiff.runtime.placement import vae_dtype
from latentdiff.runtime.device import (cpu_threads_for, prepack_cpu_weights, torch_threads,
                      use_channels_last, wants_channels_last, wants_prepacked_weights)
from latentdiff.families.registry import family_of
from latentdiff.sampling.loop import denoise, make_scheduler, refiner_start_index, steps_before
from latentdiff.sampling.schedulers import default_steps

FALLBACK_STEPS, FALLBACK_GUIDANCE = params.FALLBACK_STEPS, params.FALLBACK_GUIDANCE


class Pipeline:
    """Text-to-image latent diffusion over diffusers-format models."""

    def __init__(self, components: Components, device: torch.device, dtype: torch.dtype, model_ref=None,
                 model_dir=None, place: bool = True):
        """`place=False` leaves the modules where and as they are (e.g. mid-training)."""
        self.components = components
        self.device, self.dtype = device, dtype
        self.model_ref, self.model_dir = model_ref, model_dir
        self.progress = True
        self.max_batch = 8
        self._model_hash = None
        from latentdiff.formats.addons import AddOns

        self.addons = AddOns()  # LoRAs and embeddings added at load time
        self.compiled = False
        self._threads = None  # intra-op threads while generating; None: the process's own setting
        self.family = family_of(components)  # what the model is: its conditioning, its model call
        self.conditioning = self.family.conditioning(components)
        self.refiner, self.refiner_start = None, None  # an SDXL refiner takes over at refiner_start
        self.vae_ref = None  # a VAE given instead of the model's own
        self.notes = set()  # notes already given (preflight.note_size)
        if place:
            self.place_on(device, dtype)

    def place_on(self, device: torch.device, dtype: torch.dtype) -> None:
        """The modules on `device` in `dtype` (the VAE as vae_dtype says), in the layout and with
        the threads that run fastest there."""
        c = self.components
        self.device, self.dtype = device, dtype
        c.unet.to(device=device, dtype=dtype)
        for te in c.text_encoders():
            te.to(device=device, dtype=dtype)
        c.vae.to(device=device, dtype=vae_dtype(dtype, c.vae.config, device))
        self._threads = cpu_threads_for(device, sum(p.numel() for p in c.unet.parameters()))
        if wants_channels_last(device, dtype):
            use_channels_last(c.unet, c.vae)
        if wants_prepacked_weights(device, dtype):
            prepack_cpu_weights(c.unet)

    def to(self, device=None, dtype=None) -> "Pipeline":
        """Move and cast the loaded model, as diffusers' `pipe.to("cuda", torch.float16)` does:
        `device` a name ("cuda", "cpu", ...) or torch.device, `dtype` fp32/fp16/bf16/auto or a
        torch dtype; None keeps the current one. Returns the pipeline."""
        from latentdiff.config.api_compat import move

        return move(self, device, dtype)

    @classmethod
    def from_pretrained(cls, model=None, device: str = "auto", dtype: str = "auto", allow_pickle: bool = False,
                        compile: bool | str = False, vae=None, loras=(), embeddings=()):
        """Load a local diffusers-format directory, a single-file checkpoint (`.safetensors`,
        A1111 layout), a hub id, a LoRA folder written by `finetune --method lora`, or (None) the
        shipped default model; `vae` (a folder or file) replaces the model's VAE. `compile=True`
        (or a mode name, see `Pipeline.compile`) runs torch.compile on the UNet and VAE decoder. `loras`: LoRA files
        or folders merged into the weights, each "PATH", "PATH:SCALE" or a `LoraSpec`; `embeddings`:
        textual-inversion files, each "FILE" or "FILE:TOKEN" (the token defaults to the file name)."""
        from latentdiff.formats.load import load

        m = load(model, device, dtype, allow_pickle, compile, vae, loras, embeddings)
        pipe = cls(m.components, m.device, m.dtype, model_ref=m.ref, model_dir=m.path)
        pipe.addons, pipe.vae_ref = m.addons, m.vae_ref
        return pipe.compile(compile) if compile else pipe

    def compile(self, mode: bool | str = "auto") -> "Pipeline":
        """torch.compile the UNet and the VAE decoder in place. The first generation (and each
        new size or batch) compiles: minutes on a small CPU, cached on disk for later processes.
        `mode`: auto (CUDA graphs on CUDA; on CPU inductor, weights frozen in bf16), default, reduce-overhead,
        max-autotune, max-autotune-no-cudagraphs or fp8 (CUDA with torchao; see latentdiff/runtime/compile.py).
        Output stays within the parity tolerance of the eager path (benchmarks/generate_cpu.py
        --compile reports the pixel difference)."""
        from latentdiff.runtime.compile import compile_for_inference, compile_mode

        mode = compile_mode(mode)
        if not self.compiled and mode is not None:
            self.compiled = compile_for_inference(self.components.unet, self.components.vae, self.device, mode)
        return self

    def save_pretrained(self, out, dtype: str | None = None) -> Path:
        """Write the diffusers layout (safetensors). `dtype="fp16"` stores half-size weights
        (loaders upcast them as needed) without changing this pipeline's own modules."""
        from latentdiff.runtime.device import DTYPES

        out = Path(out)
        c = self.components
        if self.compiled and self.device.type == "cuda":
            raise UsageError("a pipeline compiled on CUDA holds fused attention projections and cannot be "
                             "saved; save it from a pipeline loaded without compile")
        if dtype is None:
            save_components(c, out, c.scheduler_config.get("_class_name", "PNDMScheduler"))
            return out
        if dtype not in DTYPES:
            raise UsageError(f"unknown dtype {dtype!r}; use fp32, fp16 or bf16")
        modules = (c.unet, c.vae, *c.text_encoders())
        before = [m.dtype for m in modules]
        try:
            for m in modules:
                m.to(DTYPES[dtype])
            save_components(c, out, c.scheduler_config.get("_class_name", "PNDMScheduler"))
        finally:
            for m, d in zip(modules, before):
                m.to(d)
        return out

    # ---- properties of the loaded model -------------------------------------------------
    @property
    def scale_factor(self) -> int:
        return vae_scale_factor(self.components.vae)

    @property
    def is_upscaler(self) -> bool:
        """A diffusion upscaler (StableDiffusionUpscalePipeline): the low-res image is 3 extra UNet channels."""
        return self.family.upscales

    @property
    def native_size(self) -> int:
        return int(self.components.unet.config.sample_size) * self.scale_factor

    @property
    def model_hash(self) -> str | None:
        if self._model_hash is None and self.model_dir is not None:
            from latentdiff.models.fingerprint import model_hash

            self._model_hash = model_hash(Path(self.model_dir))
        return self._model_hash

    def defaults(self) -> dict:
        d = self.components.defaults
        return {"steps": int(d.get("steps", FALLBACK_STEPS)), "guidance": float(d.get("guidance", FALLBACK_GUIDANCE))}

    # ---- generation ---------------------------------------------------------------------
    def __call__(self, prompt, negative_prompt="", steps=None, guidance=None, width=None, height=None,
                 seed=0, num_images=1, scheduler=None, image=None, mask=None, strength=None, callback=None,
                 clip_skip=None, prompt_syntax="a1111", **options) -> list:
        """Images for `prompt` (a string or a list); image k of the call uses seed `seed + k`.
        `callback(step, total, latents)` runs after every denoising step of every batch (latents
        `(B, C, H/f, W/f)`); raising from it (e.g. `latentdiff.errors.Cancelled`) stops the call.

        `image` (a path or PIL image) starts from that picture (img2img, noised by `strength`);
        with `mask`, inpainting. Further options (resize, mask_blur, inpaint_area, padding,
        outpaint, hires, hires_strength, hires_steps, hires_upscaler, upscaler, tile) are
        described in `latentdiff.workflows.options.ImageOptions`. `prompt_syntax="a1111"` reads
        `(word:1.3)` emphasis and BREAK, `"plain"` takes the text as it is; `clip_skip` uses the
        N-th text-encoder layer from the end (A1111 numbering)."""
        return list(self.iter_images(prompt, negative_prompt, steps, guidance, width, height, seed,
                                     num_images, scheduler, image=image, mask=mask, strength=strength,
                                     callback=callback, clip_skip=clip_skip, prompt_syntax=prompt_syntax, **options))

    def iter_images(self, prompt, negative_prompt="", steps=None, guidance=None, width=None, height=None,
                    seed=0, num_images=1, scheduler=None, callback=None, clip_skip=None, prompt_syntax="a1111",
                    **options):
        """Like __call__, but yields each image as soon as its batch is decoded."""
        from latentdiff.config.api_compat import call_arguments
        from latentdiff.formats.preflight import note_size
        from latentdiff.workflows.upscale import with_model_upscaler
        from latentdiff.workflows.options import ImageOptions

        prompts = params.prompts(params.api_label, prompt)
        steps, guidance, seed, num_images, options = call_arguments(len(prompts), steps, guidance, seed, num_images,
                                                                    options, ImageOptions.names())
        opts = ImageOptions.from_kwargs({k: v for k, v in options.items() if v is not None})
        opts = with_model_upscaler(self, opts)
        if self.is_upscaler:
            raise UsageError(f"{self.model_ref} is a diffusion upscaler, not a text-to-image model; use "
                             "`latentdiff upscale IMAGE --model` (pipe.upscale) or generate --upscaler")
        source = opts.source(width, height, self.scale_factor)
        if source is not None:
            width, height = source.image.size
        p = self._resolve(prompts, negative_prompt, steps, guidance, width, height, seed, num_images, scheduler)
        note_size(self, p, opts)
        p.update(options=opts, source=source, strength=opts.default_strength() if source else None,
                 callback=callback)
        p.update(self._text_options(clip_skip, prompt_syntax))
        jobs = [(text, p["seed"] + k) for k, text in enumerate(t for t in prompts for _ in range(p["num_images"]))]
        batch = self._batch_size(p, len(jobs))
        for i in range(0, len(jobs), batch):
            yield from self._generate(jobs[i : i + batch], p)

    def _resolve(self, prompts, negative, steps, guidance, width, height, seed, num_images, scheduler) -> dict:
        """Every argument checked (params.py), defaults filled in from the model."""
        d, api = self.defaults(), params.api_label

        def side(name, given):  # a size left out is the model's native one, named so in errors
            label = api if given is not None else (lambda n: f"the model's native {n}")
            return params.size(label, name, self.native_size if given is None else given, self.scale_factor)

        n = params.num_images(api, num_images)
        train_steps = self.components.scheduler_config.get("num_train_timesteps")
        # None keeps the model's own scheduler (with the settings its method needs, where it lacks them).
        method = params.scheduler(api, scheduler)
        p = dict(
            negative_prompt=params.text(api, "negative_prompt", "" if negative is None else negative),
            steps=params.steps(api, default_steps(method, d["steps"]) if steps is None else steps, train_steps),
            guidance=params.guidance(api, d["guidance"] if guidance is None else guidance),
            width=side("width", width), height=side("height", height),
            seed=params.seed(api, secrets.randbelow(2**32) if seed is None else seed, len(prompts) * n),
            scheduler=method, num_images=n,
        )
        where = Path(self.model_dir or ".") / "scheduler" / "scheduler_config.json"
        model_checks.check_scheduler_steps(self.components.scheduler_config, p["scheduler"], p["steps"], where)
        return p

    def _batch_size(self, p: dict, total: int) -> int:
        """At most max_batch images at a time, fewer where the memory would not hold them."""
        from latentdiff.runtime.memory import batch_that_fits, generation_bytes

        c = self.components
        unet_bytes, vae_bytes = c.unet.dtype.itemsize, c.vae.dtype.itemsize

        def need(batch: int) -> int:
            return generation_bytes(c.unet.config, c.vae.config, batch, p["width"], p["height"],
                                    p["guidance"] != 1.0, unet_bytes, vae_bytes)

        return batch_that_fits(need, min(self.max_batch, total), self.device, f"a {p['width']}x{p['height']} image")

    def _text_options(self, clip_skip, prompt_syntax) -> dict:
        clip_skip = self.components.defaults.get("clip_skip", 1) if clip_skip is None else clip_skip
        return {"clip_skip": self.conditioning.check_clip_skip(clip_skip),
                "prompt_syntax": params.prompt_syntax(params.api_label, prompt_syntax)}

    def _generate(self, jobs: list[tuple[str, int]], p: dict):
        from latentdiff.workflows.finish import finish

        texts, seeds = [j[0] for j in jobs], [j[1] for j in jobs]
        what = f"generating {len(texts)} image(s) of {p['width']}x{p['height']} on {self.device}"
        with torch_threads(self._threads), allocation_errors(what, "choose a smaller size"):
            pixels = self._sample(texts, seeds, p)
        out = []
        for image, text, s in zip(to_pil(pixels), texts, seeds):
            image, extra = finish(self, image, text, s, p)
            info = {**self._record(p, text, s), **extra}
            image.info["latentdiff"] = info
            image.info["parameters"] = a1111_line(info)
            out.append(image)
        return out

    def set_refiner(self, refiner: "Pipeline", start: float = 0.8) -> "Pipeline":
        """Hand the latents to `refiner` (an SDXL refiner) after the fraction `start` of the
        denoising, as diffusers' `denoising_end` / `denoising_start` do; it also decodes."""
        if not 0 < start < 1:
            raise UsageError(f"refiner start must be between 0 and 1 (exclusive), got {start}")
        if refiner.family.name != "sdxl" or refiner.components.unet.config.in_channels != self.components.unet.config.in_channels:
            raise UsageError("the refiner must be an SDXL model whose latents match this model's")
        self.refiner, self.refiner_start = refiner, float(start)
        return self

    def _sample(self, texts: list[str], seeds: list[int], p: dict) -> torch.Tensor:
        texts = [self.addons.expand(t) for t in texts]
        negatives = [self.addons.expand(p["negative_prompt"])] * len(texts) if p["guidance"] != 1.0 else None
        cond, uncond = self.conditioning(texts, negatives, p["height"], p["width"], p["prompt_syntax"], p["clip_skip"])
        src = p.get("source")
        image, mask = src.region() if src is not None else (None, None)
        latents, gens = self.run_loop(cond, uncond, seeds, p, p["steps"], (p["width"], p["height"]), image=image,
                                      mask=mask, strength=p.get("strength") or 1.0, with_generators=True)
        if self.refiner is not None:
            return self.refiner.decode(self._refine(latents, texts, gens, p))
        if p.get("options") is not None and p["options"].hires:
            from latentdiff.workflows.hires import hires_pass

            return hires_pass(self, latents, cond, uncond, texts, seeds, p)
        return self.decode(latents)

    def _refine(self, latents, texts, gens, p: dict) -> torch.Tensor:
        """The refiner's share of the timesteps, continuing this model's latents and generators."""
        r = self.refiner
        negatives = [p["negative_prompt"]] * len(texts) if p["guidance"] != 1.0 else None
        cond, uncond = r.conditioning(texts, negatives, p["height"], p["width"], p["prompt_syntax"])
        sched = make_scheduler(r.components.scheduler_config, p["scheduler"])
        sched.set_timesteps(p["steps"])  # on the CPU: see sampling.denoise
        start = refiner_start_index(sched, self.refiner_start)
        return denoise(r.family.denoiser(r.components), sched, latents.to(r.device), cond, uncond, p["guidance"], gens,
                       r._progress(len(texts)), start=start)

    def run_loop(self, cond, uncond, seeds: list[int], p: dict, steps: int, size: tuple[int, int],
                 with_generators: bool = False, **start):
        """One run of the sampling loop at `size`, from noise or from the start `start` describes
        (see workflows.start.prepare): the one loop every workflow goes through."""
        from latentdiff.workflows.start import prepare

        sched = make_scheduler(self.components.scheduler_config, p["scheduler"])
        sched.set_timesteps(steps)  # on the CPU: see sampling.denoise
        s = prepare(self, sched, seeds, steps, size, **start)
        # With a refiner, this model stops where the refiner takes over (and hands on its generators).
        end = steps_before(sched, self.refiner_start) if with_generators and self.refiner is not None else None
        latents = denoise(self.family.denoiser(self.components), sched, s.latents, s.inputs(cond), s.inputs(uncond),
                          p["guidance"], s.generators, self._progress(len(seeds)), start=s.start, end=end,
                          blend=s.blend, callback=p.get("callback"))
        return (latents, s.generators) if with_generators else latents

    def upscale(self, image, prompt="", negative_prompt="", steps=None, guidance=None, noise_level=None, seed=0,
                scheduler=None, tile=None, upscaler=None):
        """`image` (a path or PIL image) upscaled by a diffusion upscaler: this pipeline if it is one,
        else `upscaler` (a model reference, loaded once and kept, or a Pipeline). `tile` (output
        pixels) bounds memory on large images. Returns a PIL image with its metadata."""
        from latentdiff.workflows.upscale import load_upscaler, upscale

        model = self if self.is_upscaler and upscaler is None else load_upscaler(self, upscaler)
        return upscale(model, image, prompt, negative_prompt, steps, guidance, noise_level, seed, scheduler, tile)

    def decode(self, latents: torch.Tensor, tile: int | None = None) -> torch.Tensor:
        """Latents -> pixels in [-1, 1]; a non-finite result is redone in fp32, never returned.
        `tile` (latent pixels): decode in blended windows to bound memory (decoding.py)."""
        from latentdiff.workflows.decode import decode_latents

        return decode_latents(self.components.vae, latents, self.scale_factor, tile)

    def _record(self, p: dict, prompt: str, seed: int) -> dict:
        from latentdiff.images.record import record

        return record(self, p, prompt, seed)

    def _progress(self, batch: int):
        if not self.progress:
            return iter
        from tqdm.auto import tqdm

        return lambda it: tqdm(it, desc=f"denoising {batch} image(s)", file=sys.stderr, leave=False)
