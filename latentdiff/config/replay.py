"""Parameters an image recorded, turned back into `generate`'s flag values for `--from`: LoRAs and
embeddings as PATH:OPTION specs, control units with their per-unit settings."""

from __future__ import annotations

from latentdiff.config.control_flags import replay_specs
from latentdiff.errors import UsageError


def addon_specs(records, option: str):
    """Recorded LoRAs/embeddings ({"path", "scale"|"token"}) as "PATH:OPTION" flags; anything else
    is left for the parameter check to refuse."""
    if not isinstance(records, list) or not all(isinstance(r, dict) and "path" in r and option in r for r in records):
        return records or []
    te = [f":{r['te_scale']}" if r.get("te_scale") is not None else "" for r in records]  # a LoRA's own CLIP scale
    return [f"{r['path']}:{r[option]}{t}" for r, t in zip(records, te)]


def recorded_controls(params: dict, source: str, given: dict) -> dict:
    """The control units an image recorded, replayed: their --control values (unless the flags give
    units), the per-unit settings the flags leave out, the mode."""
    records = params.get("controls")
    options = given.pop("control_options", {})
    if not records:
        return {"control_options": options}
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise UsageError(f"the controls recorded in {source} must be a list of units")
    controls = given.get("controls") or replay_specs(records, source)
    mode = params.get("control_mode") or records[0].get("mode") or "balanced"
    return {"controls": controls, "control_options": {**options, "recorded": records}, "control_mode": mode}
