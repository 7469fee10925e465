"""Issue 24's model-file fuzzing on a FLUX.2 klein folder (the files no other family has: the Flux2
transformer's and AutoencoderKLFlux2's configs, the Qwen3 encoder's, the Qwen2 tokenizer with its
chat template, the Flux2KleinPipeline index with is_distilled): a special, truncated, oversized,
deeply nested or mistyped file ends in images or in one line."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz_models import FUZZ, _bounded_memory, generate_from_damaged  # noqa: F401 (a fixture)

FILES = [
    "model_index.json",
    "transformer/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/chat_template.jinja",
    "tokenizer/tokenizer.json",
    "vae/diffusion_pytorch_model.safetensors",
]


@pytest.mark.slow
@settings(FUZZ, max_examples=8)
@given(
    data=st.data(),
    file=st.sampled_from(FILES),
    how=st.sampled_from(["fifo", "device", "folder", "truncated", "oversized", "deep", "type"]),
)
def test_fuzz_klein_model_files(tiny_klein, data, file, how):
    if how in ("deep", "type") and not file.endswith(".json"):
        how = "truncated"
    generate_from_damaged(tiny_klein, data, file, how)


def test_a_mistyped_is_distilled_is_one_line(tiny_klein, tmp_path, run_main):
    import json
    import shutil

    model = tmp_path / "m"
    shutil.copytree(tiny_klein, model)
    index = json.loads((model / "model_index.json").read_text())
    (model / "model_index.json").write_text(json.dumps({**index, "is_distilled": "false"}))
    code, _, err = run_main(["generate", "x", "--model", model, "--steps", "1", "--out", tmp_path / "o", "--quiet"])
    assert code != 0 and len(err.strip().splitlines()) == 1 and "is_distilled must be true or false" in err, err
