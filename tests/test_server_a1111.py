"""The AUTOMATIC1111 API subset, driven by the real `webuiapi` client library from PyPI."""

import base64
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

webuiapi = pytest.importorskip("webuiapi", reason="the webuiapi client (test extra) is not installed")

SMALL = dict(steps=3, width=32, height=32)


@pytest.fixture(scope="module")
def api(served):
    # HTTP Basic with the token as password: how A1111 clients authenticate (--api-auth).
    return webuiapi.WebUIApi(host="127.0.0.1", port=served.port, username="me", password=served.token)


def test_txt2img_shapes_and_pixels_match_our_api(api, served):
    r = api.txt2img(prompt="red apple", negative_prompt="blur", seed=7, cfg_scale=3.0, sampler_name="DDIM",
                    batch_size=2, **SMALL)
    assert len(r.images) == 2 and r.images[0].size == (32, 32)
    assert r.info["all_seeds"] == [7, 8] and r.info["sd_model_name"] == "tiny-a"
    assert r.info["infotexts"][0].startswith("red apple\nNegative prompt: blur\nSteps: 3")
    assert r.parameters["prompt"] == "red apple"
    job = served.wait_job(served.submit(prompt="red apple", negative_prompt="blur", seed=7, guidance=3.0,
                                        scheduler="ddim", num_images=2, **SMALL)["id"])
    for got, img in zip(r.images, job["images"]):
        ours = Image.open(io.BytesIO(served.request("GET", img["url"]).content)).convert("RGB")
        assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(ours))


def test_random_seed_is_reported(api):
    r = api.txt2img(prompt="pear", seed=-1, sampler_name="Euler a", **SMALL)
    assert r.info["seed"] >= 0 and f"Seed: {r.info['seed']}" in r.info["infotexts"][0]


def test_samplers_models_and_options(api):
    names = api.util_get_sampler_names()
    assert {"Euler a", "DPM++ 2M Karras", "DDIM", "UniPC"} <= set(names)
    assert {"tiny-a", "tiny-b"} <= set(api.util_get_model_names())
    api.util_set_model("tiny-b", find_closest=False)
    try:
        assert api.util_get_current_model() == "tiny-b"
        assert api.txt2img(prompt="sky", seed=1, **SMALL).info["sd_model_name"] == "tiny-b"
    finally:
        api.util_set_model("tiny-a", find_closest=False)
    assert api.get_options()["sd_model_checkpoint"] == "tiny-a"


def test_progress_with_preview_and_interrupt(api):
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=api.txt2img(prompt="long", seed=3, steps=500,
                                                                         width=64, height=64)))
    worker.start()
    deadline = time.monotonic() + 120
    while True:
        p = api.get_progress()
        if p["progress"] > 0 and p["current_image"]:
            break
        assert time.monotonic() < deadline, p
        time.sleep(0.05)
    assert p["state"]["sampling_steps"] > p["state"]["sampling_step"] > 0
    Image.open(io.BytesIO(base64.b64decode(p["current_image"]))).load()
    api.interrupt()
    worker.join(60)
    assert not worker.is_alive()
    assert result["r"].images == [] and result["r"].info["interrupted"] is True
    assert api.get_progress()["state"]["job"] == ""


@pytest.mark.parametrize("kwargs, words", [
    ({"enable_hr": True}, "hires fix"),
    ({"sampler_name": "Warp Drive"}, "unknown sampler"),
    ({"width": 30}, "multiple of"),
])
def test_unsupported_or_bad_requests_are_4xx(api, kwargs, words):
    with pytest.raises(RuntimeError) as e:
        api.txt2img(prompt="x", **{**SMALL, **kwargs})
    status, text = e.value.args
    assert status == 400 and words in text
