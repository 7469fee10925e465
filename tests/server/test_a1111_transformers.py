"""The A1111 API (and /v1's guidance options) on the transformer families, served in this process with a real
worker: each answer's pixels against the family's diffusers pipeline on the same tiny folder (fp32, CPU,
within 1/255), Forge's keys in `info`, and a 400 naming the field for what a family does not take."""

from __future__ import annotations

import base64
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the server extra (latentdiff[serve]) is not installed")
sys.path.insert(0, str(Path(__file__).parents[1] / "parity"))
from flow_parity import box_mask, close, picture, reference, reference_pixels  # noqa: E402

W, H = 48, 32
SMALL = {"prompt": "a red apple", "steps": 3, "width": W, "height": H, "seed": 5}


@pytest.fixture(scope="module")
def dit_server(tmp_path_factory):
    from fastapi.testclient import TestClient

    from latentdiff.models.testing import make_tiny
    from latentdiff.server.app import Server, create_app
    from latentdiff.server.config import ServeConfig

    root = tmp_path_factory.mktemp("dit-serve")
    for i, (name, variant) in enumerate((("dev", "flux-dev"), ("fill", "flux-fill"), ("zimage", "z-image"))):
        make_tiny(root / "models" / name, variant, seed=i)
    cfg = ServeConfig(out=str(root / "out"), model=str(root / "models" / "dev"), models_dir=str(root / "models"))
    server = Server(cfg)
    with TestClient(create_app(server), raise_server_exceptions=False) as client:
        client.models = root / "models"
        yield client
    server.queue.stop(timeout=5)


def _a1111(client, route: str, model: str, **body):
    r = client.post(f"/sdapi/v1/{route}", json={**body, "override_settings": {"sd_model_checkpoint": model}})
    return r


def _pixels(answer: dict) -> np.ndarray:
    return np.stack(
        [np.asarray(Image.open(io.BytesIO(base64.b64decode(i))).convert("RGB"), np.float32) for i in answer["images"]]
    )


def _b64(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_flux_dev_cfg_scale_is_its_guidance_and_forges_fields_its_true_cfg(dit_server):
    ref = reference(dit_server.models / "dev", "FluxPipeline")
    r = _a1111(dit_server, "txt2img", "dev", **SMALL, cfg_scale=4.0, sampler_name="Euler", scheduler="Simple")
    assert r.status_code == 200, r.text
    want = reference_pixels(ref, 5, 1, (W, H), prompt="a red apple", guidance_scale=4.0, num_inference_steps=3)
    close(_pixels(r.json()), want)
    info = json.loads(r.json()["info"])
    assert (info["sampler_name"], info["cfg_scale"]) == ("Euler", 1.0)  # Forge's: the loop's CFG
    assert info["extra_generation_params"] == {"Schedule type": "Simple", "Distilled CFG Scale": 4.0}
    assert "Sampler: Euler, Schedule type: Simple, CFG scale: 1.0, Distilled CFG Scale: 4.0" in info["infotexts"][0]
    # Forge's body: cfg_scale the true CFG with the negative prompt, distilled_cfg_scale the embedded guidance
    forge = dict(SMALL, negative_prompt="blue sky", cfg_scale=2.5, distilled_cfg_scale=3.5)
    r = _a1111(dit_server, "txt2img", "dev", **forge)
    assert r.status_code == 200, r.text
    args = dict(prompt="a red apple", negative_prompt="blue sky", guidance_scale=3.5, true_cfg_scale=2.5)
    close(_pixels(r.json()), reference_pixels(ref, 5, 1, (W, H), num_inference_steps=3, **args))
    assert json.loads(r.json()["info"])["cfg_scale"] == 2.5


@pytest.mark.parametrize(
    "body, words",
    [
        ({"sampler_name": "DPM++ 2M"}, "sampler_name 'DPM++ 2M': Flux.1 samples with its own flow-matching Euler"),
        ({"sampler_name": "Euler", "scheduler": "Karras"}, "scheduler 'Karras': Flux.1 samples on its own shifted"),
        ({"scheduler": "Beta"}, "scheduler 'Beta'"),
        ({"clip_skip_is_not_a_field": 1}, "unknown field 'clip_skip_is_not_a_field'"),
    ],
)
def test_what_flux_does_not_take_is_a_400_naming_the_field(dit_server, body, words):
    r = _a1111(dit_server, "txt2img", "dev", **SMALL, **body)
    assert r.status_code == 400 and words in r.json()["error"], r.text


def test_flux_fill_inpaints_through_img2img_as_flux_fill_pipeline(dit_server):
    from latentdiff.workflows.source import soft_mask

    image, mask = picture((W, H), 1), box_mask((W, H))
    body = dict(SMALL, cfg_scale=30.0, init_images=[_b64(image)], mask=_b64(mask), mask_blur=0)
    body.update(denoising_strength=1.0, inpaint_full_res=False)  # inpainting_fill 0, A1111's default: as 1
    r = _a1111(dit_server, "img2img", "fill", **body)
    assert r.status_code == 200, r.text
    ref = reference(dit_server.models / "fill", "FluxFillPipeline")
    args = dict(prompt="a red apple", image=image, mask_image=mask, guidance_scale=30.0, strength=1.0)
    raw = reference_pixels(ref, 5, 1, (W, H), num_inference_steps=3, **args)[0].astype(np.uint8)
    want = np.asarray(Image.composite(Image.fromarray(raw), image, soft_mask(mask, 0)), np.float32)[None]
    close(_pixels(r.json()), want)
    info = json.loads(r.json()["info"])
    assert info["is_using_inpainting_conditioning"] is True and "ran as 1 (original)" in info["warnings"][0]
    r = _a1111(dit_server, "img2img", "fill", **{**body, "inpainting_fill": 2})  # A1111's own path only
    assert r.status_code == 400 and "inpainting_fill=2" in r.json()["error"], r.text


def _v1(client, **body) -> dict:
    r = client.post("/v1/generate", json=body)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job["state"] == "done", job
    return job


def test_z_image_cfg_options_in_the_json_api_as_z_image_pipeline(dit_server):
    ref = reference(dit_server.models / "zimage", "ZImagePipeline")
    options = dict(cfg_normalization=1.0, cfg_truncation=0.3)
    job = _v1(dit_server, model="zimage", negative_prompt="blue sky", guidance=3.0, **SMALL, **options)
    got = np.asarray(Image.open(io.BytesIO(dit_server.get(job["images"][0]["url"]).content)).convert("RGB"), np.float32)
    args = dict(prompt="a red apple", negative_prompt="blue sky", guidance_scale=3.0, num_inference_steps=3)
    close(got[None], reference_pixels(ref, 5, 1, (W, H), **args, **options))
    assert job["images"][0]["params"]["cfg_normalization"] == 1.0
    for model, body, words in (
        ("dev", options, "cfg_normalization and cfg_truncation are Z-Image's"),
        ("zimage", {"true_cfg": 2.0}, "true_cfg 2 is for guidance-distilled models"),
        ("zimage", {"cfg_truncation": 1.5}, "cfg_truncation"),
    ):
        r = dit_server.post("/v1/generate", json={**SMALL, "model": model, **body})
        assert r.status_code in (400, 422) and words in r.text, r.text
