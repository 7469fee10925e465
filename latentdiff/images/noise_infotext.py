"""A1111's noise fields in its infotext, both ways: "Variation seed", "Variation seed strength",
"Seed resize from", "ENSD" and "RNG", written as A1111 1.10 writes them (its processing.py
create_infotext: the variation fields only at a strength other than 0; "RNG" we write always, so
that a line of ours without it is one of diffusers' path) and read back into our noise options
(config/noise_params.py): a line with "RNG", or one A1111 or Forge wrote ("Version: v1.10.1", "f2.0"),
whose sampler A1111's own path runs here, is regenerated on that path."""

from __future__ import annotations

from latentdiff.config.flag_types import number, shown
from latentdiff.sampling.sampler_table import A1111_PATH
from latentdiff.sampling.schedulers import split_name
from latentdiff.sampling.unipc_settings import from_infotext as unipc_from_infotext

WRITTEN_RNG = {"cpu": "CPU", "gpu": "GPU", "nv": "NV"}  # A1111 leaves its default GPU out; we write it
USES_ENSD = ("euler_a", "dpm2_a", "dpm++2s_a", "dpm_fast", "dpm_adaptive")
READ_RNG = {"CPU": "cpu", "GPU": "nv", "NV": "nv"}  # the GPU's numbers, on any device


def noise_fields(p: dict) -> dict:
    """A1111's fields for an image's recorded noise (none on diffusers' path: no "rng" recorded)."""
    if not p.get("rng"):
        return {}
    strength = p.get("variation_strength") or 0
    resize = p.get("seed_resize_from")
    return {
        "Variation seed": p.get("variation_seed") if strength else None,
        "Variation seed strength": strength or None,
        "Seed resize from": f"{resize[0]}x{resize[1]}" if resize else None,
        "ENSD": p.get("ensd") if _uses_ensd(p) else None,
        "RNG": WRITTEN_RNG.get(p["rng"]),
    }


def _uses_ensd(p: dict) -> bool:
    """A1111 writes ENSD where it is set and the sampler draws ancestral noise (its "uses_ensd"), eta not 0."""
    pair = split_name(p.get("scheduler") or "")
    return bool(p.get("ensd")) and pair is not None and pair[0] in USES_ENSD and p.get("eta", 1) != 0


def _value(text: str):
    value = number(text)
    return shown(text.strip()) if value is None else value


def noise_from_fields(f: dict, params: dict, notes: list[str]) -> bool:
    """Our noise options from A1111's fields into `params` (checked later, like every recorded value),
    when the image's sampler runs on A1111's path here; True then (its pixels are A1111's), else False."""
    pair = split_name(f.get("Sampler") or "")
    theirs = (f.get("Version") or "").strip()[:1] in ("v", "f")  # A1111's "v1.10.1", Forge's "f2.0.1v1.10.1"
    if pair is None or pair[0] not in A1111_PATH or not ("RNG" in f or theirs):
        return False
    rng = (f.get("RNG") or "GPU").strip().upper()
    if rng not in READ_RNG:
        notes.append(f"ignored RNG: {shown(f['RNG'])!r} (A1111's are CPU, GPU, NV); using NV, its GPU's numbers")
    params["rng"] = READ_RNG.get(rng, "nv")
    if "RNG" not in f:
        notes.append("made with A1111's default noise source, the GPU: reproduced with --rng nv (pass --rng cpu "
                     "if it was made on a Mac, where A1111 draws on the CPU)")  # fmt: skip
    fields = {"variation_seed": "Variation seed", "variation_strength": "Variation seed strength", "ensd": "ENSD"}
    params.update({ours: _value(f[theirs]) for ours, theirs in fields.items() if theirs in f})
    if "Seed resize from" in f:
        params["seed_resize_from"] = shown(f["Seed resize from"].strip())
    if pair[0] == "unipc":  # its settings (of no effect on A1111's other samplers)
        params.update(unipc_from_infotext(f))
    return True
