"""Request bodies of our JSON API (pydantic: validated on arrival and described in /openapi.json)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from latentdiff.sampling.schedulers import NAMES
from latentdiff.server.inputs import image_inputs

MAX_SIDE, MAX_STEPS, MAX_IMAGES = 2048, 500, 16


class GenerateRequest(BaseModel):
    """Every `latentdiff generate` parameter; None takes the model's default (as the CLI does)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | list[str] = Field(description="a prompt, or a list of prompts", examples=["cat face"])
    negative_prompt: str = Field("", max_length=4000)
    steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="default: the model's recommendation")
    guidance: float | None = Field(None, ge=0, le=100, description="CFG scale; 1 disables CFG")
    width: int | None = Field(None, ge=8, le=MAX_SIDE, description="default: the model's native size")
    height: int | None = Field(None, ge=8, le=MAX_SIDE)
    seed: int | None = Field(None, ge=0, description="seed of the first image (image k: seed + k); None: random")
    num_images: int = Field(1, ge=1, le=MAX_IMAGES, description="images per prompt")
    scheduler: str | None = Field(None, description=f"{NAMES}; default: the model's own")
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
    strength: float | None = Field(
        None, gt=0, le=1, description="how far init_image is noised; default 0.75, inpainting 1.0"
    )
    resize: Literal["crop", "fit", "stretch"] | None = Field(
        None, description="how init_image reaches width x height (default crop)"
    )
    mask_blur: int | None = Field(
        None, ge=0, le=256, description="px of blur where the result meets the kept pixels (4)"
    )
    inpaint_area: Literal["full", "masked"] | None = Field(
        None, description="masked: repaint the masked region (plus padding) at the full size"
    )
    padding: int | None = Field(None, ge=0, le=MAX_SIDE, description="inpaint_area=masked: context px around the mask")
    outpaint: list[int] | None = Field(
        None, min_length=4, max_length=4, description="[left, right, top, bottom] px to grow the canvas by and paint"
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

    def pipeline_kwargs(self) -> dict:
        """The JSON parameters a job shows (the pictures are `inputs()`)."""
        return self.model_dump(exclude={"model", "init_image", "mask"})

    def inputs(self) -> dict:
        return image_inputs(self.init_image, self.mask)
