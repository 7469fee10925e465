"""Issue 27's file inputs fuzzed as issue 24's model files are: a Flux.1/SD 3.5 transformer file
(safetensors with our metadata, or GGUF) given with --components, special, truncated, oversized or
with a mistyped config key, ends in images or in one line, nothing written."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz import assert_clean, run_main
from test_fuzz_models import FUZZ, WRONG_TYPES, _bounded_memory, _damage  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def transformer_files(tmp_path_factory):
    from latentdiff.formats.gguf_file import write_gguf
    from latentdiff.formats.transformer_file import save_transformer_file
    from latentdiff.formats.transformer_keys import to_original
    from latentdiff.models.assemble import load_components
    from latentdiff.models.testing import make_tiny

    root = tmp_path_factory.mktemp("sd3-files")
    folder = make_tiny(root / "m", "sd3.5-medium")
    unet = load_components(folder).unet
    files = {"safetensors": save_transformer_file(unet, root / "t.safetensors")}
    files["gguf"] = write_gguf(root / "t.gguf", "sd3", to_original(unet.state_dict(), "sd3"))
    return folder, files


def _generate(model: Path, components: Path, tmp: str) -> None:
    out = Path(tmp) / "o"
    argv = ["generate", "x", "--model", str(model), "--components", str(components), "--steps", "1"]
    code, stdout, err = run_main(
        [*argv, "--width", "16", "--height", "16", "--quiet", "--device", "cpu", "--out", str(out)]
    )
    assert_clean(code, stdout, err, out)
    return code


@pytest.mark.slow
@settings(FUZZ, max_examples=12)
@given(
    data=st.data(),
    kind=st.sampled_from(["safetensors", "gguf"]),
    how=st.sampled_from(["fifo", "device", "folder", "truncated", "oversized", "type"]),
)
def test_fuzz_transformer_files(transformer_files, data, kind, how):
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder, files = transformer_files
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / files[kind].name
        shutil.copy(files[kind], path)
        refused = True
        if how == "type" and kind == "safetensors":
            with safe_open(str(path), "pt") as f:
                tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
            own = json.loads(meta["latentdiff.transformer"])
            key = data.draw(st.sampled_from(sorted(own["config"])), label="key")
            own["config"][key] = data.draw(WRONG_TYPES, label="value")
            save_file(tensors, str(path), metadata={**meta, "latentdiff.transformer": json.dumps(own)})
            refused = False  # a key the model does not read may take any value
        elif how == "type":  # a GGUF with bytes after its tensors: still whole
            path.write_bytes(path.read_bytes() + b"\0" * 1000)
            refused = False
        elif how == "oversized" and kind == "gguf":  # counts of tensors and keys past any file
            path.write_bytes(path.read_bytes()[:8] + b"\xff" * 16 + path.read_bytes()[24:])
        else:
            refused = _damage(path, how, data)
        code = _generate(path, folder, tmp)
        assert code != 0 or not refused, (kind, how)
