"""What of a folder's model_index.json the families read, checked."""

from __future__ import annotations

from latentdiff.errors import ModelError
from latentdiff.models.configs import INDEX_OPTIONS, ModelConfigs


def index_options(cfgs: ModelConfigs) -> dict:
    """What of model_index.json the family reads: INDEX_OPTIONS, and a transformer model's pipeline
    class (Flux Kontext's folder differs from Flux dev's in it alone)."""
    options = {k: cfgs.index[k] for k in INDEX_OPTIONS if cfgs.index.get(k) is not None}
    for k, v in options.items():
        if not isinstance(v, bool):  # "false" would read as true
            raise ModelError(f"{cfgs.path / 'model_index.json'}: {k} must be true or false, got {v!r}"[:300])
    if cfgs.denoiser == "transformer" and isinstance(cfgs.index.get("_class_name"), str):
        options["_class_name"] = cfgs.index["_class_name"]
    return options
