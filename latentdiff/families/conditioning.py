"""The conditioning of a loaded model's family (the prompt encoder generation and training use)."""

from __future__ import annotations

from latentdiff.families.clip import Conditioning, Embeddings, apply_token_weights  # noqa: F401 (re-exported)
from latentdiff.families.registry import family_of
from latentdiff.families.sdxl import SDXLConditioning  # noqa: F401 (re-exported)


def conditioning_for(components) -> Conditioning:
    """The conditioning of a loaded model's family."""
    return family_of(components).conditioning(components)
