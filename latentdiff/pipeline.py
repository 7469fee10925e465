"""`latentdiff.Pipeline`: load a model, turn prompts into images, save the model."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

import latentdiff.config.params as params
from latentdiff.config.api_compat import call_arguments, move
from latentdiff.config.request import Request, model_defaults, resolve
from latentdiff.errors import UsageError
from latentdiff.families.registry import family_of
from latentdiff.families.unclip import place_unclip
from latentdiff.formats.addons import AddOns
from latentdiff.formats.load import load
from latentdiff.formats.preflight import note_size
from latentdiff.models.checks import check_scheduler_steps
from latentdiff.models.components import Components, vae_scale_factor
from latentdiff.models.fingerprint import model_hash
from latentdiff.models.saving import save_pretrained
from latentdiff.runtime.compile import compile_for_inference, compile_mode
from latentdiff.runtime.device import place_layout, prepack_cpu_weights, wants_prepacked_weights
from latentdiff.runtime.levers import Levers, parse_speed
from latentdiff.runtime.offload import place as place_modules
from latentdiff.runtime.placement import cast, vae_dtype
from latentdiff.runtime.speed import check_savable, speed_up
from latentdiff.runtime.threads import auto_threads
from latentdiff.workflows.additions import additions, own_path, take, text_options
from latentdiff.workflows.cascade import cascade_options, is_pixel_stage, pixel_upscale
from latentdiff.workflows.decode import decode_latents
from latentdiff.workflows.options import ImageOptions
from latentdiff.workflows.text_to_image import check_refiner, generate_all, run_loop
from latentdiff.workflows.upscale import load_upscaler, upscale


class Pipeline:
    """Text-to-image latent diffusion over diffusers-format models."""

    def __init__(
        self,
        components: Components,
        device: torch.device,
        dtype: torch.dtype,
        model_ref=None,
        model_dir=None,
        place: bool = True,
        offload: str = "none",
    ):
        """`place=False` leaves the modules where and as they are (e.g. mid-training); `offload`: see from_pretrained."""
        self.components, self.offload = components, offload
        self.device, self.dtype, self.model_ref, self.model_dir = device, dtype, model_ref, model_dir
        self.progress, self.max_batch = True, 8
        self.allow_pickle = False  # from_pretrained's, also for call-time files (controls, adapters)
        self._model_hash = None
        self.addons, self.lora_dir = AddOns(), None  # load-time LoRAs/embeddings; where <lora:NAME:W> finds NAME
        self.compiled, self.speed, self.levers = False, "off", Levers(bf16=dtype == torch.bfloat16)  # runtime/speed.py
        self.threads, self.unet_params = None, 0  # CPU threads: "auto" per call (runtime/threads.py), None: as is
        self.upscalers = {}  # diffusion upscalers loaded for this pipeline (workflows/upscale.py), by reference
        self.family = family_of(components)  # what the model is: its conditioning, its model call
        self.components = components = self.family.adapt(components)
        self.conditioning = self.family.conditioning(components)
        self.refiner, self.refiner_start = None, None  # an SDXL refiner takes over at refiner_start
        self.vae_ref = None  # a VAE given instead of the model's own
        self.parts = {}  # a transformer file's --components folder and --text-encoder files (images/record.py)
        self.notes = set()  # notes already given (preflight.note_size)
        if place:
            self.place_on(device, dtype)

    def place_on(self, device: torch.device, dtype: torch.dtype) -> None:
        """The modules on `device` in `dtype` (the VAE as vae_dtype says), in the layout and with
        the threads that run fastest there."""
        c = self.components
        self.device, self.dtype = device, dtype
        c.unet.to(dtype=dtype)
        for te in c.text_encoders():
            cast(te, "cpu" if self.offload != "none" else device, dtype)  # T5's fp32 layers kept under fp16
        c.vae.to(dtype=vae_dtype(dtype, c.vae.config, device))
        place_modules(c, device, self.offload)  # on the device, or waiting in RAM (runtime/offload.py)
        place_unclip(c, device, dtype)
        self.threads, self.unet_params = auto_threads(device.type), sum(p.numel() for p in c.unet.parameters())
        place_layout(c.unet, c.vae, device, dtype)
        if wants_prepacked_weights(device, dtype):
            prepack_cpu_weights(c.unet)

    def to(self, device=None, dtype=None) -> "Pipeline":
        """Move and cast the loaded model, as diffusers' `pipe.to("cuda", torch.float16)` does:
        `device` a name ("cuda", "cpu", ...) or torch.device, `dtype` fp32/fp16/bf16/auto or a
        torch dtype; None keeps the current one. Returns the pipeline."""
        return move(self, device, dtype)

    @classmethod
    def from_pretrained(
        cls,
        model=None,
        device: str = "auto",
        dtype: str = "auto",
        allow_pickle: bool = False,
        compile: bool | str = False,
        vae=None,
        loras=(),
        embeddings=(),
        lora_dir=None,
        components=None,
        text_encoders=(),
        offload="none",
        speed="off",
        calls=None,
    ):
        """Load a local diffusers-format directory, a single-file checkpoint (`.safetensors`,
        A1111 layout), a hub id, a LoRA folder written by `finetune --method lora`, or (None) the
        shipped default model; `vae` (a folder or file) replaces the model's VAE. `compile=True`
        (or a mode name, see `Pipeline.compile`) runs torch.compile on the UNet and VAE decoder. `loras`: LoRA files
        or folders merged into the weights, each "PATH", "PATH:SCALE" or a `LoraSpec`; `embeddings`:
        textual-inversion files, each "FILE" or "FILE:TOKEN" (the token defaults to the file name);
        `lora_dir`: the folder a prompt's `<lora:NAME:W>` tags take NAME from; `components`: for a transformer
        file (safetensors, fp8 or GGUF), the diffusers folder of its family or ComfyUI's models folder its
        text encoders, tokenizers and VAE come from; `text_encoders`: text encoder files (transformers' layout, as ComfyUI
        keeps clip_l.safetensors, t5xxl_fp16.safetensors) each put in place of the model's encoder it fits; `offload`:
        none, model or sequential (runtime/offload.py: the components wait in RAM, each on the device while it works);
        `speed`, `calls`: see Pipeline.speed_up."""
        parts, speed = (components, text_encoders, offload), parse_speed(speed)
        m = load(model, device, dtype, allow_pickle, compile, vae, loras, embeddings, *parts)
        pipe = cls(m.components, m.device, m.dtype, model_ref=m.ref, model_dir=m.path, offload=offload)
        pipe.addons, pipe.vae_ref, pipe.allow_pickle, pipe.lora_dir = m.addons, m.vae_ref, bool(allow_pickle), lora_dir
        pipe.parts = m.parts
        return pipe.speed_up(speed, calls).compile(compile)  # int8 before compiling

    def speed_up(self, speed="auto", calls: int | None = None) -> "Pipeline":
        """The CPU levers `speed` (auto, off, or channels-last, compile, int8 joined by commas) chooses for `calls`
        expected UNet image-steps (None: unknown) put on; `pipe.levers` (recorded in each image): runtime/levers.py."""
        speed_up(self, speed, calls)
        return self

    def compile(self, mode: bool | str = "auto") -> "Pipeline":
        """torch.compile the UNet and the VAE decoder in place. The first generation (and each
        new size or batch) compiles: minutes on a small CPU, cached on disk for later processes.
        `mode`: auto (CUDA graphs on CUDA; on CPU inductor, weights frozen in bf16), default, reduce-overhead,
        max-autotune, max-autotune-no-cudagraphs or fp8 (CUDA with torchao; see latentdiff/runtime/compile.py).
        Output stays within the eager path's parity tolerance (benchmarks/generate_cpu.py --compile)."""
        mode = compile_mode(mode)
        if not self.compiled and mode is not None:
            self.compiled = compile_for_inference(self.components.unet, self.components.vae, self.device, mode)
        return self

    def save_pretrained(self, out, dtype: str | None = None) -> Path:
        """Write the diffusers layout (safetensors) into the folder `out`, whole or not at all (a full
        disk leaves nothing), never over the folder the model was loaded from. `dtype="fp16"` stores
        half-size weights (loaders upcast them as needed) without changing this pipeline's own modules."""
        check_savable(self)
        sources = (self.model_dir, self.model_ref, self.vae_ref, *(a.get("path") for a in self.addons.loras))
        return save_pretrained(self.components, out, dtype, sources)

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
        return self.family.native_size(self.components, self.scale_factor)

    @property
    def model_hash(self) -> str | None:
        if self._model_hash is None and self.model_dir is not None:
            self._model_hash = model_hash(Path(self.model_dir))
        return self._model_hash

    def defaults(self) -> dict:
        return model_defaults(self.family.defaults(self.components), self.components.defaults)

    # ---- generation ---------------------------------------------------------------------
    def __call__(self, prompt, *args, **kwargs) -> list:
        """Images for `prompt` (a string or a list); image k of the call uses seed `seed + k`.
        `callback(step, total, latents)` runs after every denoising step of every batch (latents
        `(B, C, H/f, W/f)`); raising from it (e.g. `latentdiff.errors.Cancelled`) stops the call.

        `image` (a path or PIL image) starts from that picture (img2img, noised by `strength`);
        with `mask`, inpainting. Further options (resize, mask_blur, inpaint_area, padding,
        outpaint, hires, hires_strength, hires_steps, hires_upscaler, upscaler, tile) are
        described in `latentdiff.workflows.options.ImageOptions`. `prompt_syntax="a1111"` reads
        `(word:1.3)` emphasis and BREAK, `"plain"` takes the text as it is; `clip_skip` uses the
        N-th text-encoder layer from the end (A1111 numbering). `controls`: `latentdiff.Control` units;
        `image_prompts`: `latentdiff.ImagePrompt`s with `ip_adapter`, `image_encoder` (workflows/additions.py)."""
        return list(self.iter_images(prompt, *args, **kwargs))

    def iter_images(
        self,
        prompt,
        negative_prompt="",
        steps=None,
        guidance=None,
        width=None,
        height=None,
        seed=0,
        num_images=1,
        scheduler=None,
        image=None,
        mask=None,
        strength=None,
        callback=None,
        clip_skip=None,
        prompt_syntax="a1111",
        true_cfg=1.0,
        **options,
    ):
        """Like __call__ (the same arguments), but yields each image as soon as its batch is decoded."""
        taken = take(options)
        options = {"image": image, "mask": mask, "strength": strength, **options}
        prompts = params.prompts(params.api_label, prompt)
        steps, guidance, seed, num_images, options = call_arguments(
            len(prompts), steps, guidance, seed, num_images, options, ImageOptions.names()
        )
        opts = ImageOptions.from_kwargs({k: v for k, v in options.items() if v is not None})
        if self.is_upscaler:
            raise UsageError(
                f"{self.model_ref} is a diffusion upscaler, not a text-to-image model; use "
                "`latentdiff upscale IMAGE --model` (pipe.upscale) or generate --upscaler"
            )
        if opts.image is not None and opts.strength is None and self.family.image_is_reference(self.components):
            opts = dataclasses.replace(opts, strength=1.0)  # Kontext: the image is a reference (any other refused)
        source = opts.source(width, height, self.scale_factor)
        if source is not None:
            width, height = source.image.size
        named = None if own_path(taken, scheduler) else scheduler  # A1111's / ComfyUI's path check their own
        request = self.resolve(prompts, negative_prompt, steps, guidance, width, height, seed, num_images, named)
        note_size(self, request, opts)
        opts = cascade_options(self, opts, (request.width, request.height))
        request = dataclasses.replace(
            request,
            options=opts,
            source=source,
            callback=params.callback(params.api_label, callback),
            strength=opts.default_strength() if source else None,
            **additions(self, taken, request, scheduler),
            **text_options(self, clip_skip, prompt_syntax, true_cfg),
        )
        yield from generate_all(self, request)

    def resolve(self, prompts, negative, steps, guidance, width, height, seed, num_images, scheduler) -> Request:
        """The request of a text-to-image call: every argument checked, the model's defaults filled in
        (config.request.resolve) and the scheduler built on the model's config for that many steps;
        raises UsageError naming the first bad one (the server checks jobs so)."""
        request = resolve(self, prompts, negative, steps, guidance, width, height, seed, num_images, scheduler)
        where = Path(self.model_dir or ".") / "scheduler" / "scheduler_config.json"
        check_scheduler_steps(self.components.scheduler_config, request.scheduler, request.steps, where)
        return request

    def set_refiner(self, refiner: "Pipeline", start: float = 0.8) -> "Pipeline":
        """Hand the latents to `refiner` (an SDXL refiner) after the fraction `start` of the
        denoising, as diffusers' `denoising_end` / `denoising_start` do; it also decodes."""
        self.refiner, self.refiner_start = refiner, check_refiner(self, refiner, start)
        return self

    def run_loop(self, cond, uncond, seeds, request: Request, steps: int, size, with_generators=False, **start):
        """One run of the sampling loop at `size` (workflows.text_to_image.run_loop): the one loop every
        workflow goes through."""
        return run_loop(self, cond, uncond, seeds, request, steps, size, with_generators, **start)

    def upscale(
        self,
        image,
        prompt="",
        negative_prompt="",
        steps=None,
        guidance=None,
        noise_level=None,
        seed=0,
        scheduler=None,
        tile=None,
        upscaler=None,
    ):
        """`image` (a path or PIL image) upscaled by a diffusion upscaler: this pipeline if it is one, else
        `upscaler` (a model reference, loaded once and kept, a Pipeline, or a pixel SR stage folder: it reads
        the prompt through this model's text encoder). `tile` (output px) bounds memory. A PIL image + metadata."""
        if upscaler is not None and not isinstance(upscaler, Pipeline) and is_pixel_stage(upscaler):
            return pixel_upscale(self, image, prompt, negative_prompt, steps, guidance, noise_level, seed, upscaler)
        model = self if self.is_upscaler and upscaler is None else load_upscaler(self, upscaler)
        return upscale(model, image, prompt, negative_prompt, steps, guidance, noise_level, seed, scheduler, tile)

    def decode(self, latents: torch.Tensor, tile: int | None = None) -> torch.Tensor:
        """Latents -> pixels in [-1, 1]; a non-finite result is redone in fp32, never returned.
        `tile` (latent pixels): decode in blended windows to bound memory (decoding.py)."""
        return decode_latents(self.components.vae, latents, self.scale_factor, tile)

    def progress_bar(self, batch: int):
        """What the loop wraps its timesteps in: a tqdm bar on stderr for `batch` images, or (with
        `progress` off) nothing. Benchmarks replace it to time each step."""
        if not self.progress:
            return iter
        from tqdm.auto import tqdm

        return lambda it: tqdm(it, desc=f"denoising {batch} image(s)", file=sys.stderr, leave=False)
