"""Request bodies of our JSON API (pydantic: validated on arrival and described in /openapi.json)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_SIDE, MAX_STEPS, MAX_IMAGES = 2048, 500, 16


class GenerateRequest(BaseModel):
    """Every `latentdiff generate` parameter; None takes the model's default (as the CLI does)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | list[str] = Field(description="a prompt, or a list of prompts", examples=["red apple"])
    negative_prompt: str = Field("", max_length=4000)
    steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="default: the model's recommendation")
    guidance: float | None = Field(None, ge=0, le=100, description="CFG scale; 1 disables CFG")
    width: int | None = Field(None, ge=8, le=MAX_SIDE, description="default: the model's native size")
    height: int | None = Field(None, ge=8, le=MAX_SIDE)
    seed: int | None = Field(None, ge=0, description="seed of the first image (image k: seed + k); None: random")
    num_images: int = Field(1, ge=1, le=MAX_IMAGES, description="images per prompt")
    scheduler: str | None = Field(None, description="ddim, ddpm, pndm, euler, euler_a, heun, lms, dpm++2m, "
                                                    "dpm++2m_karras, unipc; default: the model's own")
    model: str | None = Field(None, description="a name from GET /v1/models; default: the server's model")

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
        return self.model_dump(exclude={"model"})
