"""Our generation parameters from the parameters text AUTOMATIC1111 1.10 (and Forge) write: each key
is honoured (mapped to our setting), noted (what it used that only the user can supply: its model,
VAE, init image), or named on one line as not honoured here. None is dropped without a word.

The keys and their meaning follow A1111's modules/processing.py (create_infotext, the hires fix's
extra_generation_params), modules/sd_samplers_common.py (setup_img2img_steps) and
modules/infotext_utils.py (parse_generation_parameters).
"""

from __future__ import annotations

import re

from latentdiff.config.flag_types import number, shown
from latentdiff.config.params import MAX_STEPS
from latentdiff.config.upscalers import LATENT_UPSCALERS, PIXEL_UPSCALERS
from latentdiff.errors import UsageError
from latentdiff.images.control_infotext import units_from_fields
from latentdiff.images.infotext_parse import parse_infotext
from latentdiff.images.noise_infotext import noise_from_fields
from latentdiff.sampling.schedulers import SAMPLERS, check_scheduler_name, resolved
from latentdiff.sampling.unipc_settings import LABELS as UNIPC_LABELS

# Keys read only where the image's sampler runs on A1111's own path here (images/noise_infotext.py);
# elsewhere named as not honoured.
NOISE = {"Variation seed", "Variation seed strength", "Seed resize from", "ENSD", "RNG", *UNIPC_LABELS.values()}
NOT_YET = ()  # keys a coming change will honour: named as not honoured yet
# What A1111's own path does not run yet (a hires fix by an upscaler it lacks; ControlNet N): such a line
# runs on diffusers' path, its noise keys named as not honoured.
HIRES_KEYS = ("Hires upscale", "Hires resize")
# Keys that tell what made the image and change nothing in it (the model and VAE get notes).
ABOUT = ("Version", "User", "Lora hashes", "TI hashes", "Hashes", "Model", "Model hash", "VAE hash")
# A1111's sampler options (its infotext name -> ours); eta and s_noise are generate flags.
OPTIONS = {"Eta DDIM": "eta", "Eta": "eta", "Sigma noise": "s_noise", "Sigma churn": "s_churn"}
OPTIONS.update({"Sigma tmin": "s_tmin", "Sigma tmax": "s_tmax"})
_FLAG_OPTIONS = ("eta", "s_noise")
# Every key read below (ControlNet N: control_infotext.py).
READ = {"Steps", "Sampler", "Schedule type", "CFG scale", "Distilled CFG Scale", "Seed", "Size", "Clip skip"}
READ |= {"VAE", "Denoising strength", "Hires upscale", "Hires resize", "Hires steps", "Hires upscaler", *OPTIONS}
READ |= {"Mask blur", "Inpaint area", "Masked area padding", "Masked content", "Hires refiner"}
# The hires upscalers A1111 runs as ours do: its latent modes, and its pixel upscalers None, Lanczos, Nearest
# (an upscaler model A1111 names by its file name runs as Lanczos, named: give --hires-upscaler FILE).
HIRES_UPSCALERS = {v.lower(): k for k, v in PIXEL_UPSCALERS.items()} | {
    v[0].lower(): k for k, v in LATENT_UPSCALERS.items()
}
# A1111's extra-network tags (any kind; a name at most 255 bytes, the rest bounded: a linear scan).
NETWORK_TAG = re.compile(r"<(lora|lyco|hypernet):([^:>\n]{1,255})(?::([^>\n]{0,100}))?>")
_ANY_TAG = re.compile(r"<(\w{1,40}):([^<>\n]{1,400})>")
_CONTROL = re.compile(r"ControlNet \d{1,2}")


def _number(text: str):
    """An A1111 number as an int or a float (nan and inf included), or else its text, cut short."""
    value = number(text)
    return shown(text.strip()) if value is None else value


def params_from_a1111(text: str, source: str = "the image") -> tuple[dict, list[str]]:
    """Our generation parameters from an A1111 parameters text, and notes for the user: what it used
    that we cannot know, and one line naming the keys not honoured here. Its numbers are passed on
    as written (nan, inf, 1e400 too), text that is no number cut short, for the parameter checks to
    refuse, naming them."""
    prompt, negative, f = parse_infotext(text)
    notes = [
        "this image was made by AUTOMATIC1111, whose seeds drew their noise on the GPU: the same "
        "parameters give different pixels here"
    ]
    params: dict = {"negative_prompt": negative, "prompt_syntax": "a1111"}
    ignored: list[str] = []
    params["prompt"] = _prompt(prompt, ignored)
    _basics(f, params, notes, _on_path(f))
    _options(f, params, ignored)
    _hires(f, params, notes, ignored)
    _made_with(f, params, notes)
    units, prompts, unit_notes = units_from_fields(f)
    if units:
        params["controls"], params["control_mode"] = units, units[0]["mode"]
    if prompts:
        params["image_prompts"] = prompts
    notes += unit_notes
    known = READ | set(ABOUT) | set(NOT_YET) | (NOISE if params.get("rng") else set())
    ignored += [shown(k) for k in f if k not in known and not _CONTROL.fullmatch(k)]
    later = [k for k in NOT_YET if k in f]
    if ignored or later:
        notes.append(_named(source, ignored, later))
    return params, notes


def _on_path(f: dict) -> bool:
    """Whether A1111's own path runs this line here: text to image, img2img, inpainting of the whole
    picture or of the masked area alone, or a hires fix by one of A1111's latent upscalers ("Latent",
    its default, and the others) or its None, Lanczos and Nearest; not ControlNet."""
    if any(_CONTROL.fullmatch(k) for k in f):
        return False
    upscaler = f.get("Hires upscaler", "Latent").strip().lower()
    return not any(k in f for k in HIRES_KEYS) or upscaler in HIRES_UPSCALERS


def _named(source: str, ignored: list[str], later: list[str]) -> str:
    """The one line naming the keys (and tags) read but not honoured."""
    named = ", ".join(ignored[:20]) + (f" and {len(ignored) - 20} more" if len(ignored) > 20 else "")
    parts = [f"not honoured here, ignored: {named}"] if ignored else []
    parts += [f"not honoured yet: {', '.join(later)}"] if later else []
    return f"{source}: " + "; ".join(parts)


def _prompt(prompt: str, ignored: list) -> str:
    """The prompt with its <lora:...> tags kept (the A1111 prompt syntax reads them from --lora-dir),
    <lyco:...> read as <lora:...> (A1111 1.10's alias), every other extra-network tag taken out."""

    def tag(m: re.Match) -> str:
        kind = m.group(1).lower()
        if kind == "lora":
            return m.group(0)
        if kind == "lyco":
            return f"<lora:{m.group(2)}>"
        ignored.append(shown(m.group(0)))
        return ""

    return _ANY_TAG.sub(tag, prompt).strip()


def _basics(f: dict, params: dict, notes: list, path: bool = True) -> None:
    """Steps, CFG scale (Forge's Flux: Distilled CFG Scale), seed, clip skip, size, sampler."""
    for ours, theirs in (("steps", "Steps"), ("guidance", "CFG scale"), ("seed", "Seed"), ("clip_skip", "Clip skip")):
        if theirs in f:
            params[ours] = _number(f[theirs])
    if "Distilled CFG Scale" in f:  # Forge's Flux line: its CFG scale is the true CFG
        params["true_cfg"] = params.pop("guidance", 1.0)
        params["guidance"] = _number(f["Distilled CFG Scale"])
    if "Size" in f:
        width, x, height = f["Size"].partition("x")
        if x:
            params["width"], params["height"] = _number(width), _number(height)
        else:
            notes.append(f"ignored Size: {shown(f['Size'])!r} (not WIDTHxHEIGHT)")
    if f.get("Sampler") and "Distilled CFG Scale" in f:  # Forge's Flux: the model's own flow-matching Euler
        params["scheduler"] = None
        if (f["Sampler"].strip().lower(), f.get("Schedule type", "simple").strip().lower()) != ("euler", "simple"):
            notes.append(f"Forge's Flux sampler {shown(f['Sampler'])!r}: using the model's own flow-matching Euler")
    elif f.get("Sampler"):
        a1111 = path and noise_from_fields(f, params, notes)
        if a1111:  # A1111's own path: its pixels, not only its parameters (the first note said otherwise)
            notes.pop(0)
        params["scheduler"] = _scheduler_from(f, notes, a1111)


def _scheduler_from(f: dict, notes: list, a1111: bool = False) -> str | None:
    """Our choice for A1111's Sampler and Schedule type fields (A1111 >= 1.9 writes them apart, older
    versions as one name, "DPM++ 2M Karras"; a missing or "Automatic" schedule is A1111's default)."""
    schedule = f.get("Schedule type")
    schedule = None if (schedule or "").strip().lower() in ("", "automatic") else schedule
    try:
        return check_scheduler_name(f["Sampler"], schedule, a1111)
    except UsageError as e:
        notes.append(f"A1111 sampler {shown(f['Sampler'])!r}: {e}; using the model's own scheduler")
        return None


def _options(f: dict, params: dict, ignored: list) -> None:
    """Eta and sigma noise where the sampler takes them and generate has the flag; else named."""
    takes = SAMPLERS[resolved(params["scheduler"])[0]].options if params.get("scheduler") else ()
    for theirs, ours in OPTIONS.items():
        if theirs not in f:
            continue
        if ours in takes and ours in _FLAG_OPTIONS and ours not in params:
            params[ours] = _number(f[theirs])
        else:
            ignored.append(theirs)


def _hires(f: dict, params: dict, notes: list, ignored: list) -> None:
    """The hires fix (Hires upscale or Hires resize, Hires steps, Hires upscaler, and Denoising
    strength as its strength); without it, Denoising strength is img2img's, used with --init-image."""
    strength = _number(f["Denoising strength"]) if "Denoising strength" in f else None
    scale = _hires_scale(f, params, ignored)
    if scale is None:
        ignored += [k for k in ("Hires steps", "Hires upscaler", "Hires refiner") if k in f]
        _inpaint(f, params)
        if strength is not None:
            params["strength"] = strength
            notes.append(
                f"it was made from an init image (img2img, denoising strength {shown(str(strength))}), which "
                "A1111 does not store: give it with --init-image IMG"
            )
        return
    params["hires"] = scale
    if "Hires refiner" in f:  # A1111's "first pass", "both passes" (with a --refiner)
        params["hires_refiner_pass"] = f["Hires refiner"].strip().split(" ")[0]
    if strength is not None:
        params["hires_strength"] = strength
    steps = _number(f["Hires steps"]) if f.get("Hires steps", "0").strip() != "0" else params.get("steps")
    params["hires_steps"] = hires_schedule(steps, params.get("hires_strength", strength))
    upscaler = f.get("Hires upscaler")
    if upscaler is not None:
        key = upscaler.strip().lower()
        params["hires_upscaler"] = HIRES_UPSCALERS.get(key, "latent" if key.startswith("latent") else "lanczos")
        if key not in HIRES_UPSCALERS:
            ignored.append(f"Hires upscaler {shown(upscaler)!r} (ran as {params['hires_upscaler']})")


def _inpaint(f: dict, params: dict) -> None:
    """An inpainting line's mask blur and inpaint area (used once --init-image and --mask are given)."""
    if "Mask blur" in f:
        params["mask_blur"] = _number(f["Mask blur"])
    if "Inpaint area" in f:
        area = f["Inpaint area"].strip()
        params["inpaint_area"] = {"Only masked": "masked", "Whole picture": "full"}.get(area, shown(area))
    if "Masked area padding" in f:
        params["padding"] = _number(f["Masked area padding"])
    if "Masked content" in f:
        content = f["Masked content"].strip()
        params["masked_content"] = {"latent noise": "latent_noise", "latent nothing": "latent_nothing"}.get(
            content, shown(content)
        )


def _hires_scale(f: dict, params: dict, ignored: list):
    """The hires scale: "Hires upscale", or "Hires resize: WxH" where it keeps the aspect ratio
    (A1111: a side of 0 follows the other)."""
    if "Hires upscale" in f:
        if "Hires resize" in f:
            ignored.append("Hires resize")
        return _number(f["Hires upscale"])
    if "Hires resize" not in f:
        return None
    w, _, h = f["Hires resize"].partition("x")
    w, h, width, height = number(w), number(h), params.get("width"), params.get("height")
    ok = all(isinstance(v, int) and v >= 0 for v in (w, h)) and all(
        isinstance(v, int) and v > 0 for v in (width, height)
    )
    ratios = {r for r in ((w / width if w else None), (h / height if h else None)) if r} if ok else set()
    if len(ratios) != 1:
        ignored.append(f"Hires resize {shown(f['Hires resize'])!r} (not a scale of Size)")
        return None
    return ratios.pop()


def hires_schedule(steps, strength):
    """Our hires steps for A1111's: A1111 denoises all of its `steps` in the hires pass (on a schedule
    of steps / strength, setup_img2img_steps), we denoise int(hires_steps * strength) of ours: the
    shortest schedule of ours that denoises as many. Values that are no such numbers pass unchanged
    for the checks to refuse."""
    if not (isinstance(steps, int) and 1 <= steps <= MAX_STEPS and isinstance(strength, (int, float))):
        return steps
    if not 1 / MAX_STEPS <= strength <= 1:  # nan too: the check names the strength
        return steps
    n = int(steps / strength)
    for _ in range(3):  # n * strength > steps - strength: at most two more
        if int(n * strength) >= steps:
            break
        n += 1
    return n


def hires_denoised(hires_steps: int, strength: float) -> int:
    """The steps our hires pass denoises (diffusers' img2img rule, at least one): what A1111 calls
    "Hires steps"."""
    return max(1, min(int(hires_steps * strength), hires_steps))


def _made_with(f: dict, params: dict, notes: list) -> None:
    """The model and VAE A1111 used: a note, and its model hash for generate to check --model against."""
    if f.get("Model hash"):
        params["a1111_model_hash"] = f["Model hash"].strip()
    if f.get("Model"):
        notes.append(f"it used model {f['Model']!r} (hash {f.get('Model hash', '?')}); pass --model to choose one")
    if f.get("VAE") and _is_file(f["VAE"]):  # a VAE file of that name here: decode with it
        params["vae"] = f["VAE"]
    elif f.get("VAE"):
        vae = f"{shown(f['VAE'])!r}" + (f" (hash {shown(f['VAE hash'])})" if f.get("VAE hash") else "")
        notes.append(f"it decoded with VAE {vae}; pass --vae FILE to decode with it (else the model's own VAE)")


def _is_file(name: str) -> bool:
    from pathlib import Path

    try:
        return Path(name).is_file()
    except (OSError, ValueError):  # a NUL, a name too long
        return False


def model_hash_note(expected: str, model) -> str | None:
    """A note when --model is not the model of the image's "Model hash" (A1111's: the first 10 hex
    digits of a single file's sha256; a folder or hub id has none to compare)."""
    from pathlib import Path

    from latentdiff.models.fingerprint import model_hash  # hashes a file: only when asked

    path = Path(str(model)).expanduser() if model else None
    if path is None or not path.is_file():
        return f"the image's model hash {shown(expected)} cannot be checked against {model or 'the default model'}"
    actual = model_hash(path)
    if actual.lower() != expected.strip().lower():
        return f"the image was made with a model of hash {shown(expected)}; {model} has hash {actual}: pixels differ"
    return None
