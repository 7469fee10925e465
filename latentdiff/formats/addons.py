"""The files a user adds to a model for one session: LoRAs and textual-inversion embeddings."""

from __future__ import annotations

from dataclasses import dataclass, field

import latentdiff.config.params as params
from latentdiff.errors import UsageError
from latentdiff.formats import embeddings as ti
from latentdiff.formats import lora


@dataclass
class AddOns:
    """What was added, as images record it, and the multi-vector tokens prompts write out."""

    loras: list[dict] = field(default_factory=list)  # name, hash, scale, path
    embeddings: list[dict] = field(default_factory=list)  # token, hash, vectors, path
    multi_vector: dict[str, list[str]] = field(default_factory=dict)
    model_lora: dict | None = None  # a LoRA folder loaded as the model (merged at load): name, hash, scale, path

    def expand(self, text: str) -> str:
        return ti.expand(text, self.multi_vector)


def parse(loras=(), embeddings=()) -> tuple[list, list]:
    """Check every "PATH[:SCALE]" LoRA and "FILE[:TOKEN]" embedding (or LoraSpec / EmbeddingSpec)
    before anything loads: a list or tuple of them, each a path or a spec of the right kind."""
    return [_lora(s) for s in _items(loras, "loras")], [_embedding(s) for s in _items(embeddings, "embeddings")]


def _lora(s) -> lora.LoraSpec:
    if isinstance(s, lora.LoraSpec):
        return lora.parse_spec(_text(s.path, "loras"), scale=s.scale, te_scale=s.te_scale)
    return lora.parse_spec(_text(s, "loras"))


def _embedding(s) -> ti.EmbeddingSpec:
    if isinstance(s, ti.EmbeddingSpec):
        return ti.parse_spec(_text(s.path, "embeddings"), token=s.token)
    return ti.parse_spec(_text(s, "embeddings"))


def _items(value, name: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise UsageError(f"{name} must be a list of paths, got {type(value).__name__} {str(value)[:40]!r}")
    return list(value)


def _text(value, name: str) -> str:
    return params.path_text(params.api_label, name, value)


def apply(components, lora_specs: list, embedding_specs: list, allow_pickle: bool = False) -> AddOns:
    """Merge the LoRAs into the weights, then add the embeddings' tokens."""
    lora.apply_loras(components, lora_specs, allow_pickle)
    records, multi = ti.add_embeddings(components, embedding_specs)
    return AddOns([lora.describe(s) for s in lora_specs], records, multi)
