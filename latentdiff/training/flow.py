"""LoRA fine-tuning of the flow-matching transformer families (Flux.1, SD 3/3.5, Chroma, Qwen-Image, Z-Image), as
diffusers' train_dreambooth_lora_flux.py, _sd3.py, _qwen_image.py and _z_image.py train them (Chroma as Flux.1).

The objective (rectified flow; Esser et al. 2024, the SD3 paper): x_t = (1 - s) x_0 + s n at a noise
level s drawn per sample by the weighting scheme (uniform, logit-normal, mode) from the model
scheduler's training table (shifted where the scheduler has a fixed shift), and the MSE of the
family's model call against the velocity n - x_0, optionally weighted (sigma_sqrt, cosmap). The model
call is the family's own Denoiser, the one generation uses (Flux.1 dev embeds --guidance), and the
conditioning is the family's own (families/flow.py's CaptionCache.embed_each). Every draw comes
from the step's generator (objective.step_generator), so resume is exact.

The LoRA file is the one those scripts write (peft keys under `transformer.`, through the family's
diffusers pipeline's save_lora_weights), so FluxPipeline / StableDiffusion3Pipeline / ChromaPipeline /
QwenImagePipeline / ZImagePipeline's load_lora_weights read it; for Flux.1 also kohya's layout
(formats/lora_flux_kohya.py), which ComfyUI and Forge load.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from latentdiff.errors import ModelError, UsageError
from latentdiff.families.flow import FlowMatching
from latentdiff.families.registry import FAMILIES, family_of
from latentdiff.formats.lora_merge import UNET_TARGETS
from latentdiff.runtime.reading import read_json
from latentdiff.sampling.loop import make_scheduler
from latentdiff.sampling.model_call import Inputs

FLUX_TRAINING_GUIDANCE = 3.5  # train_dreambooth_lora_flux.py's --guidance_scale default
# Options of the UNet families' DDPM objective, refused on a flow-matching model (flag: what to use instead).
DDPM_ONLY = {
    "snr_gamma": "--weighting-scheme",
    "noise_offset": "nothing (it shifts DDPM's noise)",
    "min_timestep": "--weighting-scheme",
    "max_timestep": "--weighting-scheme",
}
FLOW_ONLY = ("weighting_scheme", "flow_shift", "guidance")


def trainable_families() -> str:
    return ", ".join(sorted(f.label for f in FAMILIES.values() if isinstance(f, FlowMatching) and f.lora_targets))


def flow_family(components) -> FlowMatching | None:
    """The model's family where it is a flow-matching one, else None (the UNet families' DDPM objective)."""
    family = family_of(components)
    return family if isinstance(family, FlowMatching) else None


def lora_targets(components) -> list[str]:
    """The denoiser's layers a LoRA run adapts: a transformer family's own, else the UNet's attention."""
    family = flow_family(components)
    return family.lora_layers(components) if family else UNET_TARGETS


def check_flow(cfg, model) -> None:
    """Refuse, in one line, what `finetune` cannot do on `model` (loaded components, or a folder's configs
    seen as them: `folder_view`): flow options on a UNet model; on a transformer family, anything but
    --method lora on a family with `lora_targets`, DDPM's options, text-encoder training, the kohya
    file layout but on Flux.1, --guidance where the model embeds none; Flux Fill and Kontext (they take images)."""
    family = family_of(model)
    if not isinstance(family, FlowMatching):
        given = _flags(n for n in FLOW_ONLY if getattr(cfg, n) is not None)
        if given:
            raise UsageError(
                f"{given[0]} applies to the flow-matching models ({trainable_families()}), not {family.label}"
            )
        return
    where = f"on {family.label} models"
    if not family.lora_targets:
        raise UsageError(
            f"finetune does not train {family.label} models yet; it trains {trainable_families()} and the UNet families"
        )
    if cfg.method != "lora":
        raise UsageError(f"--method {cfg.method} {where} is not supported yet; use --method lora")
    for name, instead in DDPM_ONLY.items():
        if getattr(cfg, name):
            raise UsageError(f"{_flags([name])[0]} is for DDPM models; {where} use {instead}")
    if cfg.train_text_encoder:
        raise UsageError(f"--train-text-encoder {where} is not supported yet (the transformer's LoRA trains alone)")
    if cfg.lora_format == "kohya" and not writes_kohya(model):
        raise UsageError(f"--lora-format kohya {where} is not written yet (Flux.1's is); use --lora-format diffusers")
    variant = family.variant(model)
    if variant in ("flux-fill", "flux-kontext"):
        raise UsageError(f"finetune does not train {variant} models yet (they take an image input)")
    if cfg.guidance is not None and family.guidance(model, cfg.guidance)[1] is None:
        raise UsageError(f"--guidance is the distilled guidance Flux.1 dev embeds; {variant} models embed none")


def writes_kohya(components) -> bool:
    """Whether a LoRA run on the model writes kohya's layout too (formats/lora_flux_kohya.py: Flux.1's)."""
    return family_of(components).name == "flux"


def _flags(names) -> list[str]:
    return [f"--{n.replace('_', '-')}" for n in names]


def folder_view(path: Path):
    """A diffusers model folder's configs seen as its loaded components (`.unet.config`, `.vae.config`,
    `.index`), so `check_flow` reads them before anything is loaded or written."""
    from types import SimpleNamespace

    from diffusers.configuration_utils import FrozenDict

    def config(*names: str) -> FrozenDict:
        found = [Path(path, n, "config.json") for n in names if Path(path, n, "config.json").is_file()]
        return FrozenDict(read_json(found[0], "config", error=ModelError) if found else {})

    index = read_json(Path(path, "model_index.json"), "model_index.json", error=ModelError)
    unet, vae = config("transformer", "unet"), config("vae")
    return SimpleNamespace(unet=SimpleNamespace(config=unet), vae=SimpleNamespace(config=vae), index=index)


class _Trained:
    """The trained transformer as the family's model call sees it: called through accelerate's wrapper
    (DDP syncs its gradients), its config and dtype read from the module itself."""

    def __init__(self, wrapped, module):
        self._wrapped, self._module = wrapped, module

    def __call__(self, *args, **kwargs):
        return self._wrapped(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._module, name)


@dataclass
class FlowObjective:
    """The flow-matching loss of a batch, a function of the batch and the step's generator."""

    call: object  # the family's Denoiser: (x_t, t, Inputs) -> velocity
    sigmas: torch.Tensor  # (N,) the training table's noise levels, 1 first
    timesteps: torch.Tensor  # (N,) the model's timesteps for them (1000 s)
    scheme: str
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29

    @classmethod
    def create(cls, cfg, components, transformer) -> "FlowObjective":
        """For the run `cfg` on `components`, calling `transformer` (the accelerate-wrapped module)."""
        family = family_of(components)
        _, embedded = family.guidance(components, FLUX_TRAINING_GUIDANCE if cfg.guidance is None else cfg.guidance)
        call = family.denoiser(replace(components, unet=_Trained(transformer, components.unet)), embedded)
        table = training_schedule(components.scheduler_config, cfg.flow_shift)
        scheme = cfg.weighting_scheme or family.weighting_scheme
        return cls(
            call, table.sigmas.float(), table.timesteps.float(), scheme, cfg.logit_mean, cfg.logit_std, cfg.mode_scale
        )

    def __call__(self, latents, context, gen: torch.Generator, image_cond=None, residuals=()) -> torch.Tensor:
        from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

        b, device = latents.shape[0], latents.device
        noise = torch.randn(latents.shape, generator=gen).to(device)
        u = compute_density_for_timestep_sampling(
            self.scheme, b, self.logit_mean, self.logit_std, self.mode_scale, generator=gen
        )
        i = (u * len(self.sigmas)).long().clamp(0, len(self.sigmas) - 1)  # `mode` reaches u = 1 at the edge
        sigma = self.sigmas[i].to(device).view(b, 1, 1, 1)
        noisy = (1 - sigma) * latents + sigma * noise
        pred = self.call(noisy, self.timesteps[i].to(device), Inputs(context, None, ())).float()
        weight = compute_loss_weighting_for_sd3(self.scheme, sigma)
        return (weight * (pred - (noise - latents).float()) ** 2).reshape(b, -1).mean(1).mean()


def training_schedule(scheduler_config: dict, shift: float | None = None):
    """The table diffusers' flow trainers draw from (`sigmas`, `timesteps`): FlowMatchEulerDiscreteScheduler's
    at creation (1 .. 1/N, shifted by its `shift` unless it shifts dynamically at sampling), or the
    unshifted table shifted by `shift`."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    config = dict(scheduler_config)
    if shift is not None:
        config.update(shift=shift, use_dynamic_shifting=False)
    return FlowMatchEulerDiscreteScheduler.from_config(config)


def save_flow_lora(out: Path, state) -> None:
    """OUT/pytorch_lora_weights.safetensors as the diffusers trainers write it: the transformer's peft
    state dict through its family's pipeline's save_lora_weights."""
    from peft.utils import get_peft_model_state_dict

    c = state.setup.components
    host = type(family_of(c).lora_host(c, make_scheduler(c.scheduler_config)))
    host.save_lora_weights(str(out), transformer_lora_layers=get_peft_model_state_dict(c.unet), safe_serialization=True)
