"""The A1111 discovery and control routes through the real `webuiapi` client, and a few A1111 fields
end to end on the tiny model: a field honoured changes the pixels as in A1111, its neutral value not."""

import base64
import io
import json

import numpy as np
import pytest
from helpers import webuiapi_client
from PIL import Image

webuiapi = pytest.importorskip("webuiapi", reason="the webuiapi client (test extra) is not installed")

SMALL = dict(prompt="red apple", seed=7, steps=3, width=32, height=32, cfg_scale=3.0)


@pytest.fixture(scope="module")
def api(served):
    return webuiapi_client(webuiapi, served)


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def test_discovery_routes_parse_in_webuiapi(api):
    assert {"automatic", "karras", "exponential", "sgm_uniform"} <= set(api.util_get_scheduler_names())
    karras = next(s for s in api.get_schedulers() if s["name"] == "karras")
    assert karras["label"] == "Karras" and karras["default_rho"] == 7.0
    sampler = next(s for s in api.get_samplers() if s["name"] == "DPM++ 2M")
    assert sampler["options"] == {"scheduler": "karras"} and "dpm++2m" in sampler["aliases"]
    assert [u["name"] for u in api.get_upscalers()] == ["None", "Lanczos", "Nearest"]
    modes = ["Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)", "Latent (nearest)"]
    assert api.get_latent_upscale_modes() == [{"name": m} for m in [*modes, "Latent (nearest-exact)"]]
    for empty in (api.get_sd_vae, api.get_face_restorers):
        assert empty() == []
    assert api.get_realesrgan_models() == [] and api.get_hypernetworks() == []
    assert api.get_embeddings() == {"loaded": {}, "skipped": {}}
    memory = api.get_memory()
    assert memory["ram"]["total"] >= memory["ram"]["free"] > 0 and (
        "error" in memory["cuda"] or memory["cuda"]["system"]
    )
    flags = api.get_cmd_flags()
    assert flags["api"] is True and flags["ckpt_dir"]
    assert api.refresh_checkpoints() is None and api.skip() is None  # nothing runs: nothing to skip


def test_the_models_folders_loras_and_styles_through_webuiapi(api):
    """A1111's LoRA folder and styles.csv in --models-dir (conftest's served): listed, and applied
    to txt2img as A1111 applies them (a tag merges the file for the job; a style wraps the prompt)."""
    assert [x["name"] for x in api.get_loras()] == ["detail"]
    assert api.get_prompt_styles() == [
        {"name": "film", "prompt": "film still of {prompt}", "negative_prompt": "blurry"}
    ]
    plain = api.txt2img(sampler_name="Euler", **SMALL)
    body = {**SMALL, "prompt": "red apple <lora:detail:0.8>"}
    tagged = api.txt2img(sampler_name="Euler", styles=["film"], **body)
    assert tagged.info["all_prompts"] == ["film still of red apple <lora:detail:0.8>"]
    assert tagged.info["all_negative_prompts"] == ["blurry"] and tagged.info["sampling_path"] == "A1111"
    assert "Lora hashes" in tagged.info["infotexts"][0] and np.abs(pixels(tagged) - pixels(plain)).max() > 0


def test_options_keep_the_settings_we_have(api, served):
    options = api.get_options()
    assert options["CLIP_stop_at_last_layers"] == 1 and options["eta_ddim"] == 0.0
    clip1 = pixels(api.txt2img(sampler_name="Euler", **SMALL))
    api.set_options({"CLIP_stop_at_last_layers": 2})
    try:
        assert api.get_options()["CLIP_stop_at_last_layers"] == 2
        r = api.txt2img(sampler_name="Euler", **SMALL)
        assert r.info["clip_skip"] == 2 and "Clip skip: 2" in r.info["infotexts"][0]
        assert np.abs(pixels(r) - clip1).max() > 0
    finally:
        api.set_options({"CLIP_stop_at_last_layers": 1})
    bad = served.request("POST", "/sdapi/v1/options", json={"show_progressbar": True})
    assert bad.status_code == 400 and "options.'show_progressbar' is not a setting" in bad.json()["error"]


def test_png_info_reads_our_images_back(api):
    r = api.txt2img(sampler_name="DPM++ 2M", scheduler="Karras", **SMALL)
    info = api.png_info(r.images[0])
    assert info.info == r.info["infotexts"][0]
    assert info.parameters["Sampler"] == "DPM++ 2M" and info.parameters["Schedule type"] == "Karras"
    assert (info.parameters["Size-1"], info.parameters["Size-2"]) == ("32", "32")
    assert json.loads(info.json["items"]["latentdiff"])["seed"] == 7


@pytest.mark.parametrize(
    "sampler, field, value, neutral",
    [
        ("Euler", "s_churn", 1.0, 0.0),  # Karras et al.'s churn: noise added back at each step
        ("Euler", "s_noise", 0.5, 1.0),  # ... with s_churn: the scale of that noise
        ("DDIM", "eta", 1.0, 0.0),  # a stochastic DDIM
    ],
)
def test_sampler_options_change_the_pixels_as_in_a1111(api, sampler, field, value, neutral):
    churn = {"s_churn": 1.0} if field == "s_noise" else {}
    base = pixels(api.txt2img(sampler_name=sampler, **{field: neutral}, **churn, **SMALL))
    r = api.txt2img(sampler_name=sampler, **{field: value}, **churn, **SMALL)
    assert np.abs(pixels(r) - base).max() > 0
    label = {"s_churn": "Sigma churn", "s_noise": "Sigma noise", "eta": "Eta DDIM"}[field]
    assert f"{label}: {value:g}" in r.info["infotexts"][0]
    assert r.info["extra_generation_params"][label] == value


def test_infotext_and_send_images(api, served):
    first = api.txt2img(sampler_name="Euler", **SMALL)
    again = served.request(
        "POST", "/sdapi/v1/txt2img", json={"infotext": first.info["infotexts"][0], "send_images": False}
    )
    assert again.status_code == 200 and again.json()["images"] == []
    info = json.loads(again.json()["info"])
    assert info["infotexts"] == first.info["infotexts"]  # the same settings, read back from the text


def test_refiner_checkpoint_is_the_sdxl_refiner_of_the_models_folder(tiny_sdxl, tiny_refiner, tmp_path):
    """refiner_checkpoint names a model of the folder, loaded beside the model for the job: the same
    pixels as the Python API's set_refiner at refiner_switch_at, on A1111's own path (its GPU noise)."""
    import shutil

    from fastapi.testclient import TestClient

    from latentdiff import Pipeline
    from latentdiff.server.app import Server, create_app
    from latentdiff.server.config import ServeConfig

    models = tmp_path / "models"
    shutil.copytree(tiny_sdxl, models / "base")
    shutil.copytree(tiny_refiner, models / "refiner")
    server = Server(ServeConfig(out=str(tmp_path / "out"), model=str(models / "base"), models_dir=str(models)))
    body = dict(prompt="a pear", seed=3, steps=4, width=64, height=64, cfg_scale=4.0, sampler_name="Euler")
    try:
        with TestClient(create_app(server)) as client:
            r = client.post(
                "/sdapi/v1/txt2img", json={**body, "refiner_checkpoint": "refiner", "refiner_switch_at": 0.5}
            )
            assert r.status_code == 200, r.text
            alone = client.post("/sdapi/v1/txt2img", json=body).json()  # the refiner is let go after its job
            bad = client.post(
                "/sdapi/v1/txt2img", json={**body, "refiner_checkpoint": "nope", "refiner_switch_at": 0.5}
            )
            assert bad.status_code == 400 and "nope" in bad.json()["error"]
    finally:
        server.queue.stop(timeout=30)
    image = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    pipe = Pipeline.from_pretrained(models / "base").set_refiner(Pipeline.from_pretrained(models / "refiner"), 0.5)
    want = pipe("a pear", seed=3, steps=4, width=64, height=64, guidance=4.0, scheduler="euler", rng="nv")[0]
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(want.convert("RGB")))
    meta = json.loads(image.info["latentdiff"])
    assert meta["refiner"].endswith("refiner") and meta["refiner_start"] == 0.5
    alone_meta = json.loads(Image.open(io.BytesIO(base64.b64decode(alone["images"][0]))).info["latentdiff"])
    assert "refiner" not in alone_meta
