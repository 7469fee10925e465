"""The one sampler x schedule-type table: our names, A1111 1.10's, ComfyUI's, the diffusers class
and the settings each needs (docs/generate.md#samplers shows it; sampling/schedulers.py reads it).

Torch-free: the CLI's --help and the server's schema list the names without loading torch."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Schedule:
    a1111: str  # A1111's "Schedule type" label
    sets: dict | None  # the diffusers settings that make it; None: not runnable here yet
    comfy: tuple[str, ...] = ()  # ComfyUI's scheduler names
    aliases: tuple[str, ...] = ()  # further names (A1111's aliases, the suffixes of its old sampler names)
    sigma_list: bool = False  # made by a sigma list (sampling/sigmas.py) for samplers that take one


# Schedules a sampler can take: "sigmas" (the diffusers class takes use_*_sigmas and a spacing),
# "list" (those and a sigma list: set_timesteps(sigmas=)), "spacing" (only timestep_spacing), "" (only
# Automatic).
_SIGMA_FLAGS = ("uniform", "karras", "exponential", "beta", "sgm_uniform")
SCHEDULES: dict[str, Schedule] = {
    "automatic": Schedule("Automatic", {}),
    # A1111's plain sigmas: timesteps evenly from the last to the first (k-diffusion get_sigmas).
    "uniform": Schedule("Uniform", {"timestep_spacing": "linspace"}),
    "karras": Schedule("Karras", {"use_karras_sigmas": True}, ("karras",), ("ka",)),
    "exponential": Schedule("Exponential", {"use_exponential_sigmas": True}, ("exponential",), ("exp",)),
    "polyexponential": Schedule("Polyexponential", None, (), sigma_list=True),
    # sgm_uniform: timesteps evenly from the last, the first left out, as diffusers' "trailing" spacing.
    "sgm_uniform": Schedule("SGM Uniform", {"timestep_spacing": "trailing"}, ("sgm_uniform",), ("SGMUniform",)),
    "kl_optimal": Schedule("KL Optimal", None, ("kl_optimal",), sigma_list=True),
    "align_your_steps": Schedule("Align Your Steps", None),
    "simple": Schedule("Simple", None, ("simple",), sigma_list=True),
    "normal": Schedule("Normal", None, ("normal",), sigma_list=True),
    "ddim": Schedule("DDIM", None, ("ddim_uniform",), sigma_list=True),
    # Beta (Lee et al. 2024) with A1111's and diffusers' default alpha = beta = 0.6.
    "beta": Schedule("Beta", {"use_beta_sigmas": True}, ("beta",)),
    # Mochi's linear-then-quadratic schedule: ComfyUI's own path only (sampling/comfy.py)
    "linear_quadratic": Schedule("Linear Quadratic", None, ("linear_quadratic",)),
}


@dataclass(frozen=True)
class Sampler:
    cls: str | None  # the diffusers class; None: not runnable here yet (no exact diffusers class)
    a1111: str  # AUTOMATIC1111's sampler name
    sets: dict = field(default_factory=dict)  # what makes the method: always applied over the model's config
    # What the method needs and diffusers' Stable Diffusion configs set, where the model's config says
    # nothing: the class defaults (clip_sample=True, set_alpha_to_one=True) are for pixel-space DDPMs and
    # ruin a latent model's image (clipping latents to [-1, 1] gives a noise square).
    needs: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()  # further names A1111 API clients send
    comfy: tuple[str, ...] = ()  # ComfyUI's names
    automatic: str | None = None  # A1111 1.10's schedule for "Automatic"; None: its plain sigmas
    schedules: str = "sigmas"  # which schedules it takes (see _SIGMA_FLAGS)
    options: tuple[str, ...] = ()  # eta, s_noise, ... it takes (its diffusers step's keywords)
    # Fewest steps that gave clean images on the shipped model (tests/sampling/test_schedulers.py); the
    # default steps are raised to it when this method is asked for by name.
    min_steps: int = 1


Method = Sampler  # the former name
_LATENT = {"clip_sample": False, "set_alpha_to_one": False}
_MS = "DPMSolverMultistepScheduler"
_SDE = {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": False, "use_exponential_sigmas": False}
_CHURN = ("s_churn", "s_tmin", "s_tmax", "s_noise")  # Karras et al. 2022's stochastic Euler (Algorithm 2)

SAMPLERS: dict[str, Sampler] = {
    "euler_a": Sampler(
        "EulerAncestralDiscreteScheduler",
        "Euler a",
        aliases=("k_euler_a", "k_euler_ancestral"),
        comfy=("euler_ancestral",),
        schedules="spacing",
    ),  # fmt: skip
    "euler": Sampler(
        "EulerDiscreteScheduler", "Euler", aliases=("k_euler",), comfy=("euler",), options=_CHURN, schedules="list"
    ),
    "lms": Sampler("LMSDiscreteScheduler", "LMS", aliases=("k_lms",), comfy=("lms",)),
    "heun": Sampler("HeunDiscreteScheduler", "Heun", aliases=("k_heun",), comfy=("heun",)),
    "dpm2": Sampler("KDPM2DiscreteScheduler", "DPM2", aliases=("k_dpm_2",), comfy=("dpm_2",), automatic="karras"),
    "dpm2_a": Sampler(
        "KDPM2AncestralDiscreteScheduler",
        "DPM2 a",
        aliases=("k_dpm_2_a",),
        comfy=("dpm_2_ancestral",),
        automatic="karras",
    ),  # fmt: skip
    "dpm++2s_a": Sampler(
        None, "DPM++ 2S a", aliases=("k_dpmpp_2s_a",), comfy=("dpmpp_2s_ancestral",), automatic="karras"
    ),
    "dpm++2m": Sampler(
        _MS,
        "DPM++ 2M",
        sets={"algorithm_type": "dpmsolver++", "solver_order": 2},
        aliases=("k_dpmpp_2m",),
        comfy=("dpmpp_2m",),
        automatic="karras",
    ),  # fmt: skip
    # Brownian-tree noise, one tree per image seeded with its seed (sampling/loop.py seed_per_image).
    "dpm++sde": Sampler(
        "DPMSolverSDEScheduler",
        "DPM++ SDE",
        aliases=("k_dpmpp_sde",),
        comfy=("dpmpp_sde", "dpmpp_sde_gpu"),
        automatic="karras",
        options=("s_noise",),
    ),  # fmt: skip
    "dpm++2m_sde": Sampler(
        _MS,
        "DPM++ 2M SDE",
        sets={**_SDE, "solver_type": "midpoint", "solver_order": 2},
        aliases=("k_dpmpp_2m_sde",),
        comfy=("dpmpp_2m_sde", "dpmpp_2m_sde_gpu"),
        automatic="exponential",
    ),  # fmt: skip
    "dpm++2m_sde_heun": Sampler(
        _MS,
        "DPM++ 2M SDE Heun",
        sets={**_SDE, "solver_type": "heun", "solver_order": 2},
        aliases=("k_dpmpp_2m_sde_heun",),
        comfy=("dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu"),
        automatic="exponential",
    ),  # fmt: skip
    "dpm++3m_sde": Sampler(
        _MS,
        "DPM++ 3M SDE",
        sets={**_SDE, "solver_order": 3},
        aliases=("k_dpmpp_3m_sde",),
        comfy=("dpmpp_3m_sde", "dpmpp_3m_sde_gpu"),
        automatic="exponential",
    ),  # fmt: skip
    "dpm_fast": Sampler(None, "DPM fast", aliases=("k_dpm_fast",), comfy=("dpm_fast",), schedules=""),
    "dpm_adaptive": Sampler(None, "DPM adaptive", aliases=("k_dpm_ad",), comfy=("dpm_adaptive",), schedules=""),
    "restart": Sampler(None, "Restart", automatic="karras"),
    "ddim": Sampler("DDIMScheduler", "DDIM", needs=_LATENT, comfy=("ddim",), schedules="spacing", options=("eta",)),
    "ddim_cfg++": Sampler(None, "DDIM CFG++", aliases=("ddim_cfgpp",), schedules="", options=("eta",)),
    # PLMS's four-step multistep formula is unstable at the shipped model's 12 steps.
    "pndm": Sampler(
        "PNDMScheduler",
        "PLMS",
        sets={"skip_prk_steps": True},
        needs={"set_alpha_to_one": False},
        aliases=("plms",),
        schedules="spacing",
        min_steps=30,
    ),  # fmt: skip
    "unipc": Sampler("UniPCMultistepScheduler", "UniPC", comfy=("uni_pc_bh2",)),
    "lcm": Sampler("LCMScheduler", "LCM", needs=_LATENT, aliases=("k_lcm",), comfy=("lcm",), schedules="spacing"),
    # Not A1111's: DDPM (ComfyUI, Forge), TCD (Zheng et al. 2024; few-step LoRAs), DEIS (ComfyUI, Forge).
    "ddpm": Sampler("DDPMScheduler", "DDPM", needs={"clip_sample": False}, comfy=("ddpm",), schedules="spacing"),
    "tcd": Sampler("TCDScheduler", "TCD", needs=_LATENT, comfy=("tcd",), schedules="spacing", options=("eta",)),
    "deis": Sampler("DEISMultistepScheduler", "DEIS", comfy=("deis",)),
}
# ComfyUI's own samplers without a diffusers class: its KSampler path only (sampling/comfy_samplers.py).
_COMFY_ONLY = {
    "ipndm": ("iPNDM", "ipndm"),
    "ipndm_v": ("iPNDM V", "ipndm_v"),
    "res_multistep": ("Res Multistep", "res_multistep"),
    "res_multistep_a": ("Res Multistep a", "res_multistep_ancestral"),
    "res_multistep_cfg++": ("Res Multistep CFG++", "res_multistep_cfg_pp"),
    "res_multistep_a_cfg++": ("Res Multistep a CFG++", "res_multistep_ancestral_cfg_pp"),
    "er_sde": ("ER SDE", "er_sde"),
    "euler_cfg++": ("Euler CFG++", "euler_cfg_pp"),
    "euler_a_cfg++": ("Euler a CFG++", "euler_ancestral_cfg_pp"),
    "dpm++2m_cfg++": ("DPM++ 2M CFG++", "dpmpp_2m_cfg_pp"),
    "dpm++2s_a_cfg++": ("DPM++ 2S a CFG++", "dpmpp_2s_ancestral_cfg_pp"),
    "sa_solver": ("SA-Solver", "sa_solver"),
    "sa_solver_pece": ("SA-Solver PECE", "sa_solver_pece"),
    "heunpp2": ("Heun++ 2", "heunpp2"),
    "gradient_estimation": ("Gradient Estimation", "gradient_estimation"),
    "gradient_estimation_cfg++": ("Gradient Estimation CFG++", "gradient_estimation_cfg_pp"),
    "seeds_2": ("SEEDS 2", "seeds_2"),
    "seeds_3": ("SEEDS 3", "seeds_3"),
}
SAMPLERS.update({k: Sampler(None, label, comfy=(name,)) for k, (label, name) in _COMFY_ONLY.items()})
SCHEDULERS = {k: m for k, m in SAMPLERS.items() if m.cls}  # the ones that run here
# What A1111's own path runs (sampling/k_samplers.py, a1111_timesteps.py), chosen by an A1111 noise
# option (rng, ...): all 20 of A1111 1.10's samplers
A1111_PATH = ("euler", "euler_a", "heun", "lms", "dpm2", "dpm2_a", "dpm++2s_a", "dpm++2m", "dpm++sde")
A1111_PATH += ("dpm++2m_sde", "dpm++2m_sde_heun", "dpm++3m_sde", "dpm_fast", "dpm_adaptive", "restart", "lcm")
A1111_PATH += ("ddim", "ddim_cfg++", "pndm", "unipc")
NAMES = ", ".join(SCHEDULERS)
SCHEDULE_NAMES = ", ".join(k for k, s in SCHEDULES.items() if s.sets is not None or s.sigma_list)
MIN_STEPS = ", ".join(f"{k} at least {m.min_steps}" for k, m in SCHEDULERS.items() if m.min_steps > 1)
OPTIONS = ("eta", "s_noise", "s_churn", "s_tmin", "s_tmax")


def _index(table: dict, *fields) -> dict[str, str]:
    names = {}
    for key, row in table.items():
        for n in (key, row.a1111, *(x for f in fields for x in getattr(row, f))):
            names.setdefault(n.lower(), key)
    return names


_SAMPLER_NAMES = _index(SAMPLERS, "aliases", "comfy")
_SCHEDULE_NAMES = _index(SCHEDULES, "aliases", "comfy")


# ComfyUI's sampler name -> (our k_samplers key, whether its Brownian tree grows on the device)
COMFY_OWN = {  # run on ComfyUI's own KSampler path (sampling/comfy.py)
    "euler": ("euler", False),
    "euler_ancestral": ("euler_a", False),
    "heun": ("heun", False),
    "dpm_2": ("dpm2", False),
    "dpm_2_ancestral": ("dpm2_a", False),
    "lms": ("lms", False),
    "dpmpp_2s_ancestral": ("dpm++2s_a", False),
    "dpmpp_2m": ("dpm++2m", False),
    "dpmpp_sde": ("dpm++sde", False),
    "dpmpp_sde_gpu": ("dpm++sde", True),
    "dpmpp_2m_sde": ("dpm++2m_sde", False),
    "dpmpp_2m_sde_gpu": ("dpm++2m_sde", True),
    "dpmpp_2m_sde_heun": ("dpm++2m_sde_heun", False),
    "dpmpp_2m_sde_heun_gpu": ("dpm++2m_sde_heun", True),
    "dpmpp_3m_sde": ("dpm++3m_sde", False),
    "dpmpp_3m_sde_gpu": ("dpm++3m_sde", True),
    "dpm_fast": ("dpm_fast", False),
    "dpm_adaptive": ("dpm_adaptive", False),
    **{name: (key, False) for key, (_, name) in _COMFY_ONLY.items()},
    "deis": ("deis", False),  # ComfyUI's own DEIS ("tab"); diffusers' DEISMultistepScheduler off this path
    "ddim": ("euler", False),  # ComfyUI's ddim is Euler (its masked area noised from seed + 1); diffusers' DDIM off it
    "ddpm": ("ddpm", False),  # ComfyUI's own DDPM and LCM steps; diffusers' classes off this path
    "lcm": ("lcm", False),
}
