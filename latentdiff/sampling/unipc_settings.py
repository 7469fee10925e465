"""A1111's UniPC settings (its shared_options' uni_pc_variant, uni_pc_skip_type, uni_pc_order,
uni_pc_lower_order_final) and their checks, torch-free (the server's settings table names them without
loading torch; sampling/a1111_unipc.py runs them)."""

from __future__ import annotations

from latentdiff.errors import UsageError

# A1111's setting -> (unipc()'s keyword, A1111's default, its choices or (lowest, highest))
SETTINGS = {
    "uni_pc_variant": ("variant", "bh1", ("bh1", "bh2", "vary_coeff")),
    "uni_pc_skip_type": ("skip", "time_uniform", ("time_uniform", "time_quadratic", "logSNR")),
    "uni_pc_order": ("order", 3, (1, 50)),
    "uni_pc_lower_order_final": ("lower_final", True, (True, False)),
}
# ... and their infotext names (A1111's shared_options' infotext=), which A1111's PNG Info reads back
LABELS = {
    "uni_pc_variant": "UniPC variant",
    "uni_pc_skip_type": "UniPC skip type",
    "uni_pc_order": "UniPC order",
    "uni_pc_lower_order_final": "UniPC lower order final",
}


def check_setting(name: str, value):
    """One UniPC setting's value as A1111 takes it; a UsageError naming it otherwise."""
    _, _, allowed = SETTINGS[name]
    if name == "uni_pc_order":
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not (whole and allowed[0] <= value <= allowed[1]):
            raise UsageError(f"{name} must be a whole number from 1 to 50 (at most the steps), got {str(value)[:40]!r}")
        return value
    if not any(value == a and type(value) is type(a) for a in allowed):
        raise UsageError(f"{name} must be one of {', '.join(map(str, allowed))}; got {str(value)[:40]!r}")
    return value


def from_infotext(fields: dict) -> dict:
    """The settings an A1111 parameters text names (`fields`: its key -> text), as A1111 casts them
    (the order a whole number where it is one, the flag True unless "False"); checked later."""
    out = {}
    for name, label in LABELS.items():
        if label in fields:
            text = fields[label].strip()
            if name == "uni_pc_order":
                out[name] = int(text) if text.isdigit() else text
            elif name == "uni_pc_lower_order_final":
                out[name] = text.lower() != "false"
            else:
                out[name] = text
    return out


def on_off(text: str) -> bool:
    """A command line's true/false."""
    if text.strip().lower() not in ("true", "false"):
        raise ValueError(text)
    return text.strip().lower() == "true"
