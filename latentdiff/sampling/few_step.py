"""The published sampling settings of few-step models (distilled models and LoRAs), as presets a
model's latentdiff.json can name ("preset": "lightning") or spell out (the same keys).

Each row is what the model's authors publish for diffusers, in our names: their "guidance_scale=0"
(no classifier-free guidance) is our guidance 1.0, and diffusers' timestep_spacing="trailing" is our
schedule type sgm_uniform (A1111's "SGM Uniform"). Torch-free."""

from __future__ import annotations

from latentdiff.errors import UsageError

# name -> (settings, where they are published)
PRESETS: dict[str, tuple[dict, str]] = {
    # Luo et al. 2023, latent-consistency/lcm-lora-sdv1-5 and -sdxl: LCMScheduler, 4-8 steps, no CFG.
    "lcm": ({"scheduler": "lcm", "steps": 4, "guidance": 1.0}, "latent-consistency/lcm-lora-sdv1-5 model card"),
    # stabilityai/sd-turbo, sdxl-turbo: 1-4 steps, guidance_scale=0.0, EulerAncestral with trailing spacing.
    "turbo": ({"scheduler": "euler_a_sgm_uniform", "steps": 1, "guidance": 1.0}, "stabilityai/sdxl-turbo model card"),
    # ByteDance/SDXL-Lightning (2/4/8-step): EulerDiscreteScheduler, timestep_spacing="trailing", guidance 0.
    "lightning": (
        {"scheduler": "euler_sgm_uniform", "steps": 4, "guidance": 1.0},
        "ByteDance/SDXL-Lightning model card",
    ),
    # ByteDance/Hyper-SD N-step LoRAs: DDIMScheduler, timestep_spacing="trailing", guidance 0.
    "hyper-sd": ({"scheduler": "ddim_sgm_uniform", "steps": 8, "guidance": 1.0}, "ByteDance/Hyper-SD model card"),
    # Zheng et al. 2024, h1t/TCD-SD15-LoRA and TCD-SDXL-LoRA: TCDScheduler, 4 steps, guidance 0, eta 0.3.
    "tcd": ({"scheduler": "tcd", "steps": 4, "guidance": 1.0, "eta": 0.3}, "h1t/TCD-SDXL-LoRA model card"),
}
SAMPLING_KEYS = ("scheduler", "steps", "guidance", "eta", "s_noise", "s_churn", "s_tmin", "s_tmax")


def expand(defaults: dict, where: str) -> dict:
    """`defaults` (a latentdiff.json) with its "preset" spelled out; keys it states itself win."""
    name = defaults.get("preset")
    if name is None:
        return defaults
    if not isinstance(name, str) or name not in PRESETS:
        raise UsageError(f"{where}: unknown preset {repr(name)[:60]}; choose one of: {', '.join(PRESETS)}")
    return {**PRESETS[name][0], **defaults}
