"""The family interface: everything that differs between model families, asked of one object.

A family (SD 1/2, SDXL, the x4 upscaler; the transformers Flux.1, SD 3/3.5, Qwen-Image, Z-Image) answers how to tell its
models from their configs, which released configs a single file of it needs, how a prompt
becomes its conditioning, how its network is called (the Denoiser of sampling/model_call.py),
and how to build a tiny seeded model of it for tests. Adding a family is a module with a
subclass of `Family` and a row in registry.py; nothing outside families/ tests for one.

`components` below is the loaded model (models.components.Components or anything with the same
fields: unet, vae, text_encoder[_2|_3], tokenizer[_2|_3], scheduler_config, index, upscaler).
"""

from __future__ import annotations

from latentdiff.errors import ModelError, UsageError


class Family:
    name: str = ""  # the registry key
    label: str = ""  # what users read ("SDXL")
    variants: tuple[str, ...] = ()  # released architectures / tiny-model kinds, the first the default
    upscales: bool = False  # an image upscaler (the low-res image is an input), not text-to-image
    fp16: str = "ok"  # runtime.placement.DtypeRule: "ok", "warn" (clamped activations), "refuse" (NaN)
    bf16_first: bool = False  # trained and released in bf16: `auto` takes bf16 on a GPU that computes it

    # ---- detection ------------------------------------------------------------------------
    def matches(self, unet: dict, vae: dict, index: dict) -> bool:
        """Whether a model with these configs (denoiser, VAE, model_index.json) is of this family."""
        raise NotImplementedError

    def variant(self, components) -> str:
        """Which of `variants` a loaded model follows (the released config its single file uses)."""
        return self.variants[0]

    def dtype_rule(self, unet: dict):
        """The precision rule (runtime.placement.DtypeRule) of a model with this denoiser config."""
        # Here, not at the top: placement imports torch, which the family interface itself does not need.
        from latentdiff.runtime.placement import DtypeRule

        return DtypeRule(self.label, self.fp16, self.bf16_first)

    # ---- offline configs ------------------------------------------------------------------
    def released(self, variant: str, in_channels: int | None = None, prediction: str | None = None) -> dict:
        """The released configs of `variant` (unet, vae, text_encoder[_2], scheduler, index), so a
        single-file checkpoint loads without the hub."""
        raise ModelError(f"no released configs are shipped for {self.label}")

    def model_index(self, components, index: dict) -> dict:
        """diffusers' model_index.json for this family, from the generic `index`."""
        return index

    # ---- generation -----------------------------------------------------------------------
    def adapt(self, components):
        """`components` as the workflows use them (Qwen-Image's video VAE seen as an image VAE, FLUX.2's in
        its patched latent space); in place."""
        return components

    def conditioning(self, components):
        """The prompt encoder: `(prompts, negatives, height, width, syntax, clip_skip) -> (cond,
        uncond)` contexts (with `check_clip_skip`, `embed`, ... as families/clip.py's Conditioning)."""
        raise NotImplementedError

    def denoiser(self, components, guidance: float | None = None):
        """The model call: a sampling.model_call.Denoiser over the loaded network; `guidance`: the
        distilled guidance it embeds (the second value of `guidance`), None for none."""
        raise NotImplementedError

    def guidance(self, components, guidance: float, true_cfg: float = 1.0) -> tuple[float, float | None]:
        """(the loop's classifier-free guidance scale, the guidance the model call embeds or None)
        for a request's `guidance` and `true_cfg`: CFG families guide in the loop; a
        guidance-distilled one embeds `guidance` and guides in the loop only with `true_cfg`."""
        self.refuse_true_cfg(true_cfg)
        return guidance, None

    def refuse_true_cfg(self, true_cfg: float, theirs: str = "the CFG scale") -> None:
        """A family that guides in the loop (no distilled guidance to embed) takes no second scale."""
        if true_cfg != 1.0:
            raise UsageError(
                f"true_cfg {true_cfg:g} is for guidance-distilled models (Flux dev); {self.label} guides with "
                f"guidance ({theirs}) and the negative prompt (leave true_cfg at 1)"
            )

    def guide_options(self, normalization: float = 0.0, truncation: float = 1.0) -> dict:
        """The denoiser's keyword options for a request's CFG normalisation (0: off) and truncation (1: off),
        where the family's pipeline has them (Z-Image); elsewhere anything but off is one line."""
        if (normalization, truncation) != (0.0, 1.0):
            raise UsageError(
                f"cfg_normalization and cfg_truncation are Z-Image's guidance options (ZImagePipeline's); "
                f"{self.label} models take neither (leave them at 0 and 1)"
            )
        return {}

    def set_timesteps(self, scheduler, steps: int, size: tuple[int, int], factor: int) -> None:
        """Set `scheduler` for `steps` steps of an image of `size` (w, h) pixels, `factor` pixels a
        latent pixel (flow-matching families shift the schedule by the image's size), on the CPU."""
        scheduler.set_timesteps(steps)

    def own_sampler(self, name: str) -> bool:
        """Whether our sampler name `name` is what A1111-style lines call the model's own scheduler."""
        return False

    def check_scheduler(self, name: str | None) -> None:
        """Refuse, in one line, a scheduler (our name; None: the model's own) this family cannot sample with."""

    def defaults(self, components) -> dict:
        """Recommended settings (steps, guidance) where the model's latentdiff.json gives none."""
        return {}

    def strength_steps(self, steps: int, strength: float) -> int | None:
        """How many of `steps` an image-to-image run of `strength` denoises, where the family's
        diffusers img2img pipeline counts them otherwise than SD's (None: int(steps * strength))."""
        return None

    def size_step(self, components, factor: int) -> int:
        """Image sides must be multiples of this (the VAE's factor; more where latents are patched)."""
        return factor

    def native_size(self, components, factor: int) -> int:
        """The side in pixels of the images the model was trained at."""
        return int(components.unet.config.sample_size) * factor

    def inpainting(self, components) -> bool:
        """Whether the network takes a mask and the masked image's latents as extra channels."""
        return False

    def mask_channels(self, components, mask, masked):
        """An inpainting network's extra channels from the (1, 1, H, W) 0/1 `mask` and the masked
        image's (B, C, h, w) latents: SD's 9-channel UNets take the mask at latent size (nearest, as
        diffusers) before the latents."""
        import torch
        import torch.nn.functional as F

        small = F.interpolate(mask, size=masked.shape[2:]).expand(len(masked), -1, -1, -1)
        return torch.cat([small, masked], dim=1)

    def image_is_reference(self, components) -> bool:
        """Whether the model reads the given image as a reference it edits (Flux Kontext: extra tokens)
        rather than starting from it."""
        return False

    def encodes_full_start(self, components) -> bool:
        """Whether an inpainting network's start at strength 1 (pure noise) still encodes the init
        image, drawing from the generators (FluxFillPipeline does; SD's inpainting pipelines do not)."""
        return False

    def check_start(self, components) -> None:
        """Refuse, in one line, a text-to-image or image-to-image start this model cannot make."""

    # ---- tests ----------------------------------------------------------------------------
    def lora_host(self, components, scheduler):
        """A diffusers pipeline object around `components`' modules (no copies) whose LoRA loader
        reads this family's LoRA files and maps the community layouts (formats/lora.py)."""
        raise ModelError(f"LoRA files do not load on {self.label} models")

    def tiny(self, variant: str | None = None, seed: int = 0) -> dict:
        """A tiny seeded model of `variant`: the fields of models.components.Components (modules,
        tokenizers, scheduler_config, ...), ready to save."""
        raise NotImplementedError


def diffusers_pipeline(cls_name: str, components, scheduler, **extra):
    """diffusers' pipeline `cls_name` around `components`' modules (no copies), for its loaders: each
    of its arguments that the components have by name, the denoiser as its `unet` or `transformer`."""
    import inspect

    import diffusers

    cls = getattr(diffusers, cls_name)
    names = inspect.signature(cls.__init__).parameters
    denoiser = "transformer" if "transformer" in names else "unet"
    own = [n for n in names if n not in ("self", "unet", "transformer", "scheduler", *extra) and hasattr(components, n)]
    parts = {n: getattr(components, n) for n in own}
    return cls(**parts, **{denoiser: components.unet}, scheduler=scheduler, **extra)
