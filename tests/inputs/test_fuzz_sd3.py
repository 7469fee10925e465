"""Issue 24's model-file fuzzing on an SD 3.5 folder (the files SD's folders do not have: the
transformer, the third text encoder and its T5 tokenizer, the StableDiffusion3Pipeline index): a
special, truncated, oversized, deeply nested or mistyped file ends in images or in one line."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz_models import FUZZ, _bounded_memory, generate_from_damaged  # noqa: F401 (a fixture)

FILES = [
    "model_index.json",
    "transformer/config.json",
    "text_encoder_2/config.json",
    "text_encoder_3/config.json",
    "scheduler/scheduler_config.json",
    "transformer/diffusion_pytorch_model.safetensors",
    "text_encoder_3/model.safetensors",
    "tokenizer_3/tokenizer.json",
]


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("sd3") / "m", "sd3.5-medium")


@pytest.mark.slow
@settings(FUZZ, max_examples=16)
@given(
    data=st.data(),
    file=st.sampled_from(FILES),
    how=st.sampled_from(["fifo", "device", "folder", "truncated", "oversized", "deep", "type"]),
)
def test_fuzz_sd3_model_files(tiny_sd3, data, file, how):
    if how in ("deep", "type") and not file.endswith(".json"):
        how = "truncated"
    generate_from_damaged(tiny_sd3, data, file, how)
