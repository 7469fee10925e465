"""A1111's sampler options (eta, s_churn, s_tmin, s_tmax, s_noise) as its samplers take them, for ours."""

from __future__ import annotations

from latentdiff.errors import UsageError
from latentdiff.sampling.schedulers import OPTIONS, SCHEDULERS
from latentdiff.sampling.unipc_settings import SETTINGS as UNIPC_SETTINGS

# Which sampler options A1111 1.10's samplers take, by our sampler key: `eta` where its k-diffusion
# function has one (DDIM: its eta_ddim), the others by its sampler_extra_params.
_CHURN = {"euler", "heun", "dpm2"}
_SDE = {"dpm++sde", "dpm++2m_sde", "dpm++2m_sde_heun", "dpm++3m_sde"}
_ETA = {"euler_a", "dpm2_a", "dpm++2s_a", "dpm_fast", "dpm_adaptive", "ddim", *_SDE}
A1111_TAKES = {"eta": _ETA, "s_churn": _CHURN, "s_tmin": _CHURN, "s_tmax": _CHURN}
A1111_TAKES["s_noise"] = _CHURN | _SDE | {"dpm_fast", "dpm2_a", "dpm++2s_a"}
NOT_A1111 = {"ddpm", "tcd", "deis"}  # our samplers A1111 lacks: what they do not take is refused
# A1111's defaults of the options (s_tmax 0: infinity); DDIM's eta is 0 (eta_ddim).
OPTION_DEFAULTS = {"eta": 1.0, "s_churn": 0.0, "s_tmin": 0.0, "s_tmax": 0.0, "s_noise": 1.0}
OPTION_BOUNDS = {"eta": 1, "s_churn": 100, "s_tmin": 1000, "s_tmax": 1000, "s_noise": 2}


def sampler_options(body, values: dict, sampler: str | None) -> dict:
    """eta, s_churn, s_tmin, s_tmax, s_noise as A1111 takes them (the field, else the setting; an s_
    setting other than its default wins over the field, as in A1111), for our pipeline: those our
    sampler takes; refused where A1111's sampler takes one ours does not, unless at A1111's default;
    of no effect, as in A1111, where its sampler takes none. Our samplers A1111 lacks (TCD, ...) take
    the body's value as it is. `sampler` None: not known yet (the
    model's own, not loaded): what is not at A1111's default goes on for the pipeline to check."""
    out = {}
    for name in OPTIONS:
        default = 0.0 if name == "eta" and sampler == "ddim" else OPTION_DEFAULTS[name]
        value = _option_value(name, body, values, sampler, default)
        takes = sampler is None or name in SCHEDULERS[sampler].options
        if value is None or (value == default and not (takes and sampler in NOT_A1111)):
            continue
        if takes:
            out[name] = value
        elif sampler in A1111_TAKES[name] or sampler in NOT_A1111:
            m = SCHEDULERS[sampler].a1111
            raise UsageError(
                f"{name}={value:g}: latentdiff's {m} runs with {name} {default:g} only; send {default:g} or "
                f"leave it out (samplers that take {name}: "
                f"{', '.join(x.a1111 for x in SCHEDULERS.values() if name in x.options) or 'none'})"
            )
    return {**out, **unipc_settings(values, sampler)}


def unipc_settings(values: dict, sampler: str | None) -> dict:
    """A1111's UniPC settings other than its defaults, for its UniPC; of no effect on its other samplers,
    as in A1111 (and on a model's own sampler not known yet, which is rarely UniPC: left out there)."""
    if sampler != "unipc":
        return {}
    return {k: values[k] for k, (_, default, _) in UNIPC_SETTINGS.items() if values[k] != default}


def _option_value(name: str, body, values: dict, sampler: str | None, default: float) -> float | None:
    given = getattr(body, name)
    setting = values["eta_ancestral" if name == "eta" else name]
    if sampler in NOT_A1111:  # not A1111's: the body's own value, else a setting sent (not A1111's default)
        return given if given is not None or setting == OPTION_DEFAULTS[name] else setting
    if name == "eta":
        if given is not None or sampler is None:
            return given
        return values["eta_ddim" if sampler == "ddim" else "eta_ancestral"]
    return values[name] if values[name] != default or given is None else given
