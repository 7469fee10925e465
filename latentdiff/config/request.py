"""`Request`: one call of `Pipeline` with every parameter checked and the model's defaults filled
in. It travels from `Pipeline.iter_images` through the workflows (start, hires, finish) to the
image's record; nothing on the way changes it (`dataclasses.replace` makes a changed copy)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import latentdiff.config.params as params
from latentdiff.errors import UsageError
from latentdiff.sampling.noise import COMFY_DEVICES, ComfyNoise
from latentdiff.sampling.sampler_table import OPTIONS
from latentdiff.sampling.schedulers import default_steps

if TYPE_CHECKING:  # annotations only: the workflows import PIL and numpy
    from latentdiff.sampling.noise_request import NoiseRequest
    from latentdiff.workflows.comfy_start import ComfyRun
    from latentdiff.workflows.options import ImageOptions
    from latentdiff.workflows.source import Source
    from latentdiff.workflows.unclip import UnclipRequest


@dataclass(frozen=True)
class Request:
    prompts: tuple[str, ...]
    """The prompt texts (A1111 syntax or plain, as `prompt_syntax` says); each makes `num_images` images."""
    negative_prompt: str
    """What the images should not show: the unconditional side of classifier-free guidance."""
    steps: int
    """Denoising steps (of the scheduler's full schedule; img2img runs the last `strength` of them)."""
    guidance: float
    """Classifier-free guidance scale; 1.0 runs the conditional prediction alone."""
    width: int
    """Image width in pixels of the first pass (a multiple of the VAE's factor)."""
    height: int
    """Image height in pixels of the first pass (a multiple of the VAE's factor)."""
    seed: int
    """Seed of the first image; image k of the call uses `seed + k`."""
    num_images: int
    """Images per prompt."""
    scheduler: str | None
    """Our sampler and schedule type as one name ("dpm++2m_karras"; sampling/schedulers.py); None keeps
    the model's own."""
    clip_skip: int | None = None
    """Text-encoder layer from the end (A1111 numbering, 1 = last); None where not applicable (upscaler)."""
    prompt_syntax: str = "plain"
    """"a1111": (word:1.3) emphasis and BREAK; "plain": the text as written."""
    options: ImageOptions | None = None
    """Start from an image, hires fix, the upscaler cascade (workflows/options.py)."""
    source: Source | None = None
    """The init image and mask, read and sized (img2img, inpainting, outpainting); None: from noise."""
    strength: float | None = None
    """How much of `source` is repainted (0 < s <= 1); None without a source."""
    callback: Callable | None = None
    """`callback(step, total, latents)` after every denoising step; raising from it stops the call."""
    controls: tuple = ()
    """Checked control units (workflows/control.py Unit): ControlNets adding to the UNet's blocks."""
    image_prompts: tuple = ()
    """Checked IP-Adapter image prompts (workflows/image_prompt.py Slot): image tokens the UNet attends to."""
    sampler_options: tuple = ()
    """(name, value) pairs of the sampler's options given (eta, s_noise, s_churn, s_tmin, s_tmax)."""
    true_cfg: float = 1.0
    """A guidance-distilled model's (Flux dev's) true classifier-free guidance scale, with the negative
    prompt (diffusers' true_cfg_scale); 1.0: off. `guidance` is then the scale it embeds."""
    cfg_normalization: float = 0.0
    """Z-Image's CFG normalisation (ZImagePipeline's cfg_normalization): the guided prediction's norm capped
    at this many times the conditional's; 0: off."""
    cfg_truncation: float = 1.0
    """Z-Image's CFG truncation (ZImagePipeline's cfg_truncation): unguided steps once 1 - t/1000 passes it;
    1: off."""
    a1111: NoiseRequest | None = None
    """A1111's noise (rng, variation seed and strength, seed resize, ENSD) and with it A1111's own
    sampling path (sampling/a1111.py); None: diffusers' schedulers and noise."""

    unclip: UnclipRequest | None = None
    """A Stable unCLIP model's image embedding: from a picture (variations), its prior, or zeros, and the
    noise level it is noised to (workflows/unclip.py); None for other models."""

    noise: str = "per_image"
    """Where the noise comes from (sampling/noise.py): "per_image" (image k from seed + k) or "comfy"
    (ComfyUI's: one draw for a batch latent of `noise_batch` rows from the seed; image k is a row), or
    "comfy_nv" (that, with the step noise ComfyUI draws on an NVIDIA GPU)."""
    noise_batch: int | None = None
    """"comfy": the rows of the batch latent the noise is drawn for (None: `num_images`)."""
    noise_index: int = 0
    """"comfy": the row of each prompt's first image (replaying image k of a batch alone: k)."""
    comfy_run: ComfyRun | None = None
    """A ComfyUI graph's sampler stages and the picture and mask they start from (workflows/comfy_start.py),
    run on ComfyUI's own path; None: one KSampler from an empty latent, as the fields above say."""

    def __post_init__(self):
        if self.noise in COMFY_DEVICES and (
            self.source is not None or (self.options is not None and self.options.hires)
        ):
            raise UsageError("noise 'comfy' (ComfyUI's batch noise) is for text to image: no init image, no hires fix")
        if self.noise in COMFY_DEVICES and self.noise_index + self.num_images > (self.noise_batch or self.num_images):
            raise UsageError(
                f"noise rows {self.noise_index}..{self.noise_index + self.num_images - 1} lie outside a batch of "
                f"{self.noise_batch}; the row index plus the images must fit the noise batch"
            )

    def jobs(self) -> list[tuple[str, int]]:
        """(prompt, seed) of every image in order: each prompt `num_images` times, the seeds counting up
        (with ComfyUI's noise, every image has the seed: it is a row of one batch's noise)."""
        texts = [t for t in self.prompts for _ in range(self.num_images)]
        step = 0 if self.noise in COMFY_DEVICES else 1
        return [(text, self.seed + k * step) for k, text in enumerate(texts)]

    def comfy_noise(self, first: int, count: int) -> ComfyNoise | None:
        """ComfyUI's noise of jobs first..first + count - 1 (one prompt's images), or None (per image)."""
        if self.noise not in COMFY_DEVICES:
            return None
        rows = tuple(self.noise_index + (first + j) % self.num_images for j in range(count))
        return ComfyNoise(self.seed, rows, self.noise_batch or self.num_images, COMFY_DEVICES[self.noise])

    def batch_size(self, most: int) -> int:
        """Images per loop run: `most`, or with ComfyUI's noise one prompt's images (its step noise is
        drawn for the whole batch at once)."""
        return self.num_images if self.noise in COMFY_DEVICES else most


def model_defaults(family: dict, recorded: dict) -> dict:
    """The settings a call leaves out: the family's, then the model's latentdiff.json (steps, guidance
    and a recorded sampler with its options, sampling/few_step.py), else the fallbacks."""
    d = {**family, **recorded}
    steps, guidance = d.get("steps", params.FALLBACK_STEPS), d.get("guidance", params.FALLBACK_GUIDANCE)
    sampling = {k: d[k] for k in ("scheduler", *OPTIONS) if d.get(k) is not None}
    return {"steps": int(steps), "guidance": float(guidance), **sampling}


def resolve(pipe, prompts, negative, steps, guidance, width, height, seed, num_images, scheduler) -> Request:
    """The request of a text-to-image call of `pipe` (a Pipeline): every argument checked (params.py),
    the model's defaults filled in; a UsageError names the first bad one."""
    d, api = pipe.defaults(), params.api_label

    step = pipe.family.size_step(pipe.components, pipe.scale_factor)  # Flux: 2x2 latent patches

    def side(name, given):  # a size left out is the model's native one, named so in errors
        label = api if given is not None else (lambda n: f"the model's native {n}")
        return params.size(label, name, pipe.native_size if given is None else given, step)

    n = params.num_images(api, num_images)
    train_steps = pipe.components.scheduler_config.get("num_train_timesteps")
    # None keeps the model's own scheduler (with the settings its method needs, where it lacks them).
    method = params.scheduler(api, d.get("scheduler") if scheduler is None else scheduler)
    pipe.family.check_scheduler(method)
    request = Request(
        prompts=tuple(prompts),
        negative_prompt=params.text(api, "negative_prompt", "" if negative is None else negative),
        steps=params.steps(api, default_steps(method, d["steps"]) if steps is None else steps, train_steps),
        guidance=params.guidance(api, d["guidance"] if guidance is None else guidance),
        width=side("width", width),
        height=side("height", height),
        seed=params.seed(api, secrets.randbelow(2**32) if seed is None else seed, len(prompts) * n),
        scheduler=method,
        num_images=n,
    )
    return request
