"""ComfyUI's models folder as --components (formats/comfy_models.py): a Flux.1 transformer file
with the CLIP-L, T5-XXL (scaled fp8) and ae.safetensors files a ComfyUI install keeps, found by their
tensors under names of the user's choosing, gives the pixels of the diffusers folder made of the
same parts; two T5 files are one line naming both."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfy_tree import scaled_fp8, write_comfy_tree


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    root = tmp_path_factory.mktemp("ComfyUI")
    return (root, *write_comfy_tree(root))


def _pixels(pipe) -> np.ndarray:
    pipe.progress = False
    return np.asarray(pipe("a red apple", steps=2, seed=4, width=32, height=32)[0], dtype=np.int16)


def test_flux_file_with_comfyui_models_folder(comfy, tmp_path):
    from latentdiff import Pipeline
    from latentdiff.families.flux_tiny import SCHEDULERS
    from latentdiff.formats.transformer_parts import upcast_fp8
    from latentdiff.models.components import Components, save_components

    root, parts, f = comfy
    loaded = Pipeline.from_pretrained(f, device="cpu", dtype="fp32", components=root / "models")
    t5 = parts["text_encoder_2"]
    t5.load_state_dict({k: v.float() for k, v in upcast_fp8(scaled_fp8(t5.state_dict())).items()}, strict=False)
    got = loaded.components.text_encoder_2.state_dict()
    assert all(torch.equal(got[k], v) for k, v in t5.state_dict().items())
    scheduler = {"_class_name": "FlowMatchEulerDiscreteScheduler", **SCHEDULERS["flux-dev"]}
    save_components(
        Components(**parts, scheduler_config=scheduler, defaults={}), tmp_path / "ref", scheduler["_class_name"]
    )
    ref = Pipeline.from_pretrained(tmp_path / "ref", device="cpu", dtype="fp32")
    want = _pixels(ref)
    assert np.array_equal(_pixels(loaded), want) and want.std() > 5


def test_z_image_file_with_comfyui_models_folder(comfy, tmp_path):
    """Qwen3 (qwen_3_4b.safetensors, named model.*) and ae.safetensors found by their tensors, Qwen's
    tokenizer from the ComfyUI install with Qwen3's chat template: the reference folder's pixels."""
    from comfy_tree import z_image_parts

    from latentdiff import Pipeline
    from latentdiff.models.components import Components, save_components

    root, parts, _ = comfy
    f = root / "models" / "diffusion_models" / "z_image_turbo_bf16.safetensors"
    loaded = Pipeline.from_pretrained(f, device="cpu", dtype="fp32", components=root / "models")
    z = {**z_image_parts(), "vae": parts["vae"]}
    save_components(Components(**z, defaults={}), tmp_path / "ref", z["scheduler_config"]["_class_name"])
    want = _pixels(Pipeline.from_pretrained(tmp_path / "ref", device="cpu", dtype="fp32"))
    assert np.array_equal(_pixels(loaded), want) and want.std() > 5


def test_two_t5_files_are_one_line(comfy, tmp_path, run_main):
    import shutil

    from latentdiff.errors import UsageError
    from latentdiff.formats.comfy_models import chosen_files

    root, _, f = comfy
    other = root / "models" / "clip" / "t5xxl_fp16.safetensors"
    shutil.copy(root / "models" / "text_encoders" / "t5xxl_fp8_e4m3fn_scaled.safetensors", other)
    try:
        out = tmp_path / "out"
        argv = ["generate", "x", "--model", f, "--components", root / "models", "--steps", "1", "--quiet", "--out", out]
        code, stdout, err = run_main([str(a) for a in argv])
        assert code == 2 and stdout == "" and len(err.strip().splitlines()) == 1 and not out.exists(), err
        assert "holds 2 T5-XXL files" in err and "t5xxl_fp16.safetensors" in err and "--text-encoder FILE" in err
        chosen = chosen_files(root / "models", "flux", "Flux.1", [other])  # what --text-encoder FILE does
        assert chosen["text_encoder_2"] == other.resolve() and chosen["vae"].name == "ae.safetensors"
        qwen3 = root / "models" / "text_encoders" / "qwen_3_4b.safetensors"
        with pytest.raises(UsageError, match="qwen_3_4b.safetensors is none of the encoders Flux.1 takes"):
            chosen_files(root / "models", "flux", "Flux.1", [other, qwen3])  # not dropped silently
    finally:
        other.unlink()


def test_serve_a_z_image_file_with_comfyui_models_folder(comfy, tmp_path):
    """`serve --model FILE --components ~/ComfyUI/models --offload model`: a job's image is the Python API's."""
    import io
    import time

    pytest.importorskip("fastapi", reason="the server extra (latentdiff[serve]) is not installed")
    from fastapi.testclient import TestClient
    from PIL import Image

    from latentdiff import Pipeline
    from latentdiff.server.app import Server, create_app
    from latentdiff.server.config import ServeConfig

    root, _, _ = comfy
    f, models = root / "models" / "diffusion_models" / "z_image_turbo_bf16.safetensors", root / "models"
    cfg = ServeConfig(out=str(tmp_path / "out"), model=str(f), components=str(models), device="cpu", dtype="fp32",
                      offload="model")  # fmt: skip
    server = Server(cfg)
    try:
        with TestClient(create_app(server)) as client:
            r = client.post("/v1/generate", json=dict(prompt="a red apple", seed=4, steps=2, width=32, height=32))
            assert r.status_code == 202, r.text
            deadline = time.monotonic() + 120
            while (job := client.get(f"/v1/jobs/{r.json()['id']}").json())["state"] not in ("done", "failed"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert job["state"] == "done", job["error"]
            got = Image.open(io.BytesIO(client.get(job["images"][0]["url"]).content)).convert("RGB")
    finally:
        server.queue.stop(timeout=5)
    want = _pixels(Pipeline.from_pretrained(f, device="cpu", dtype="fp32", components=models))
    assert np.array_equal(np.asarray(got, dtype=np.int16), want)


def test_weights_checked_from_the_chosen_files(comfy, monkeypatch):
    """The refusal of weights that cannot fit counts the files chosen from the folder (their
    tensors' values in the compute dtype: fp8 counts as fp32 here), before any is read (--vae given too)."""
    from latentdiff import Pipeline
    from latentdiff.errors import UsageError

    root, parts, f = comfy
    seen = {}

    def refuse(what, sizes, device, need, options):
        seen.update(sizes, what=what)
        raise UsageError("refused")

    monkeypatch.setattr("latentdiff.formats.memory_check.check_weights_fit", refuse)
    monkeypatch.setattr("latentdiff.formats.comfy_models.build_encoder", lambda *a, **k: pytest.fail("loaded"))
    vae = root / "models" / "vae" / "ae.safetensors"
    with pytest.raises(UsageError, match="refused"):
        Pipeline.from_pretrained(f, device="cpu", dtype="fp32", components=root / "models", vae=vae)
    assert seen.pop("what") == "Flux.1 in fp32"
    scales = sum(1 for k, v in parts["text_encoder_2"].state_dict().items() if v.ndim == 2 and k.endswith(".weight"))
    for slot in ("text_encoder", "text_encoder_2", "vae", "transformer"):
        module = parts["unet" if slot == "transformer" else slot]
        extra = scales if slot == "text_encoder_2" else 0  # scaled fp8's scale_weight scalars
        assert seen[slot] == 4 * (sum(v.numel() for v in module.state_dict().values()) + extra), slot


def test_convert_a_file_and_comfyui_folder_to_a_diffusers_folder(comfy, tmp_path):
    """`convert z_image_turbo_bf16.safetensors OUT/ --components ~/ComfyUI/models`: a diffusers folder
    with the same pixels (its tokenizer and chat template saved with it)."""
    from latentdiff import Pipeline
    from latentdiff.formats.convert import convert

    root, _, _ = comfy
    f, models = root / "models" / "diffusion_models" / "z_image_turbo_bf16.safetensors", root / "models"
    out = convert(f, tmp_path / "z-image", components=models)
    want = _pixels(Pipeline.from_pretrained(f, device="cpu", dtype="fp32", components=models))
    assert np.array_equal(_pixels(Pipeline.from_pretrained(out, device="cpu", dtype="fp32")), want)
