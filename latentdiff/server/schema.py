"""Request bodies of our JSON API (pydantic: validated on arrival and described in /openapi.json)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from latentdiff.config.control_flags import MAX_WEIGHT, MODES, RESIZE_MODES
from latentdiff.config.params import MAX_GUIDANCE, MAX_SEED
from latentdiff.prompts.syntax import SYNTAXES
from latentdiff.sampling.noise import NOISE_MODES
from latentdiff.sampling.noise_request import RNG_SOURCES
from latentdiff.sampling.schedulers import NAMES, SCHEDULE_NAMES
from latentdiff.server.a1111_samplers import OPTION_BOUNDS
from latentdiff.server.image_prompts import MAX_PROMPTS, MAX_SCALE
from latentdiff.server.inputs import ControlFile, Pictures, PromptFile, pictures
from latentdiff.server.values import real, whole

MAX_SIDE, MAX_STEPS, MAX_IMAGES = 2048, 500, 16
# One outpaint border: the canvas is bounded further by inputs.check_canvas (pixels and memory).
MAX_OUTPAINT = 4096
MAX_UNITS = 8  # control units of a request (workflows/control.MAX_UNITS)
MAX_THRESHOLD = 10_000  # a preprocessor's slider: each module's own range is checked after (control_flags)


class ControlUnit(BaseModel):
    """One ControlNet or T2I-Adapter unit (latentdiff.Control): a picture, a model of GET
    /v1/controls, and how strongly and when it steers."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(
        description="base64 image file (a data: URL too): the control map, or the picture `module` makes it from"
    )
    model: str = Field(
        description="a control model's name from GET /v1/controls (as /controlnet/model_list prints it, "
        "'name [hash]', or the name alone)",
        max_length=400,
    )
    weight: real(0, MAX_WEIGHT) = Field(1.0, description="conditioning scale")
    start: real(0, 1) = Field(0.0, description="fraction of the steps where the unit starts")
    end: real(0, 1) = Field(1.0, description="fraction of the steps where it ends (above start)")
    resize: Literal[RESIZE_MODES] = Field(
        "crop", description="how the map reaches the image size (A1111's Crop and Resize, Resize and Fill, Just Resize)"
    )
    module: str = Field("none", max_length=100, description="preprocessor (A1111's names; GET /v1/controls)")
    processor_res: whole(-1, MAX_SIDE, optional=True) = Field(
        None, description="the preprocessor's resolution (64..2048; default 512)"
    )
    threshold_a: real(-MAX_THRESHOLD, MAX_THRESHOLD, optional=True) = Field(
        None, description="the preprocessor's first slider (canny: low threshold); default: A1111's"
    )
    threshold_b: real(-MAX_THRESHOLD, MAX_THRESHOLD, optional=True) = None


class ImagePromptUnit(BaseModel):
    """One IP-Adapter image prompt (latentdiff.ImagePrompt): a picture and an adapter of GET /v1/controls."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(
        description="base64 image file (a data: URL too); for a FaceID adapter, base64 of a numpy .npy file of "
        "face embeddings, shape (512,) or (N, 512) (no pickle)"
    )
    adapter: str = Field(
        description="an IP-Adapter's name from GET /v1/controls `ip_adapters` ('name [hash]', or the name alone)",
        max_length=400,
    )
    scale: real(0, MAX_SCALE) = Field(1.0, description="how strongly the picture steers (0: not at all)")


class GenerateRequest(BaseModel):
    """Every `latentdiff generate` parameter; None takes the model's default (as the CLI does)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | list[str] = Field(description="a prompt, or a list of prompts", examples=["cat face"])
    negative_prompt: str = Field("", max_length=4000)
    steps: whole(1, MAX_STEPS, optional=True) = Field(None, description="default: the model's recommendation")
    guidance: real(0, 100, optional=True) = Field(
        None, description="CFG scale; 1 disables CFG (Flux.1 dev: the guidance it embeds)"
    )
    true_cfg: real(1, MAX_GUIDANCE) = Field(
        1.0, description="a guidance-distilled model's (Flux.1 dev's) true CFG with the negative prompt; 1: off"
    )
    cfg_normalization: real(0, MAX_GUIDANCE) = Field(
        0.0, description="Z-Image's CFG normalisation (ZImagePipeline's cfg_normalization); 0: off"
    )
    cfg_truncation: real(0, 1) = Field(
        1.0, description="Z-Image's CFG truncation (ZImagePipeline's cfg_truncation): unguided past it; 1: off"
    )
    width: whole(8, MAX_SIDE, optional=True) = Field(None, description="default: the model's native size")
    height: whole(8, MAX_SIDE, optional=True) = None
    seed: whole(0, MAX_SEED, optional=True) = Field(
        None, description="seed of the first image (image k: seed + k); None: random"
    )
    num_images: whole(1, MAX_IMAGES) = Field(1, description="images per prompt")
    scheduler: str | None = Field(None, description=f"{NAMES}; default: the model's own")
    schedule_type: str | None = Field(
        None, max_length=100, description=f"schedule type ({SCHEDULE_NAMES}; A1111's and ComfyUI's names too)"
    )
    eta: real(0, OPTION_BOUNDS["eta"], optional=True) = Field(None, description="eta of samplers that take one")
    s_noise: real(0, OPTION_BOUNDS["s_noise"], optional=True) = Field(None, description="sigma noise (Euler, SDE)")
    prompt_syntax: Literal[SYNTAXES] = Field(
        "a1111", description="a1111: A1111's prompt syntax; comfy: ComfyUI's weighting; plain: the text as it is"
    )
    noise: Literal[NOISE_MODES] = Field(
        "per_image", description="per_image: image k from seed + k (diffusers); comfy: ComfyUI's one batch draw"
    )
    rng: Literal[RNG_SOURCES] | None = Field(
        None,
        description="A1111's noise source (cpu, gpu, nv: CUDA's numbers on any device); with it or the "
        "variation fields the job runs A1111's own sampling path",
    )
    variation_seed: whole(0, MAX_SEED, optional=True) = Field(None, description="A1111's variation seed (subseed)")
    variation_strength: real(0, 1, optional=True) = Field(
        None, description="0..1: slerp from the seed's noise to the variation seed's (A1111's path)"
    )
    model: str | None = Field(None, description="a name from GET /v1/models; default: the server's model")
    # Starting from a picture (img2img; with a mask, inpainting; outpaint grows the canvas).
    init_image: str | None = Field(
        None,
        description="base64 image file (PNG, JPEG, WebP; a data: URL too): img2img; "
        "no width/height: its own size (trimmed to a multiple of 8)",
    )
    mask: str | None = Field(
        None,
        description="base64 image, white repaints (or drawn opaque on a transparent "
        "layer): inpainting; needs init_image",
    )
    strength: real(0, 1, optional=True, above=True) = Field(
        None, description="how far init_image is noised; default 0.75, inpainting 1.0"
    )
    resize: Literal["crop", "fit", "stretch"] | None = Field(
        None, description="how init_image reaches width x height (default crop)"
    )
    mask_blur: whole(0, 256, optional=True) = Field(
        None, description="px of blur where the result meets the kept pixels (4)"
    )
    inpaint_area: Literal["full", "masked"] | None = Field(
        None, description="masked: repaint the masked region (plus padding) at the full size"
    )
    padding: whole(0, MAX_SIDE, optional=True) = Field(
        None, description="inpaint_area=masked: context px around the mask"
    )
    outpaint: list[whole(0, MAX_OUTPAINT)] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="[left, right, top, bottom] px to grow the canvas by and paint; the canvas may "
        "have at most 4096 x 4096 pixels",
    )
    controls: list[ControlUnit] | None = Field(
        None, max_length=MAX_UNITS, description=f"ControlNet / T2I-Adapter units (at most {MAX_UNITS})"
    )
    image_prompts: list[ImagePromptUnit] | None = Field(
        None, max_length=MAX_PROMPTS, description=f"IP-Adapter image prompts (at most {MAX_PROMPTS})"
    )
    control_mode: Literal[MODES] = Field(
        "balanced",
        description="balanced, prompt (My prompt is more important), control (ControlNet is more "
        "important) as A1111; guess: diffusers' guess mode",
    )

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v):
        texts = [v] if isinstance(v, str) else v
        if not texts or len(texts) > MAX_IMAGES or not all(t.strip() for t in texts):
            raise ValueError(f"give a non-empty prompt, or 1 to {MAX_IMAGES} non-empty prompts")
        if any(len(t) > 4000 for t in texts):
            raise ValueError("a prompt is longer than 4000 characters")
        return v

    def pipeline_kwargs(
        self, shown_controls: list[dict] | None = None, shown_prompts: list[dict] | None = None
    ) -> dict:
        """The JSON parameters a job shows (the pictures are `inputs()`); with control units, they
        as `shown_controls` names them (no pictures) and the control mode; image prompts likewise."""
        exclude = {"model", "init_image", "mask", "controls", "control_mode", "image_prompts"}
        params = self.model_dump(exclude=exclude)
        params["schedule"] = params.pop("schedule_type")
        if shown_controls:
            params.update(controls=shown_controls, control_mode=self.control_mode)
        if shown_prompts:
            params.update(image_prompts=shown_prompts)
        return params

    def inputs(self, controls: tuple[ControlFile, ...] = (), prompts: tuple[PromptFile, ...] = ()) -> Pictures:
        return pictures(self.init_image, self.mask, controls=controls, prompts=prompts)
