"""The files a user adds to a model for one session: LoRAs and textual-inversion embeddings."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """Check every "PATH[:SCALE]" LoRA and "FILE[:TOKEN]" embedding before anything loads."""
    return (
        [s if isinstance(s, lora.LoraSpec) else lora.parse_spec(s) for s in loras],
        [s if isinstance(s, ti.EmbeddingSpec) else ti.parse_spec(s) for s in embeddings],
    )


def apply(components, lora_specs: list, embedding_specs: list, allow_pickle: bool = False) -> AddOns:
    """Merge the LoRAs into the weights, then add the embeddings' tokens."""
    lora.apply_loras(components, lora_specs, allow_pickle)
    records, multi = ti.add_embeddings(components, embedding_specs)
    return AddOns([lora.describe(s) for s in lora_specs], records, multi)
