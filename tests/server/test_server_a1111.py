"""The AUTOMATIC1111 API subset, driven by the real `webuiapi` client library from PyPI."""

import base64
import io
import json
import threading
import time

import numpy as np
import pytest
from helpers import webuiapi_client
from PIL import Image

webuiapi = pytest.importorskip("webuiapi", reason="the webuiapi client (test extra) is not installed")

SMALL = dict(steps=3, width=32, height=32)


@pytest.fixture(scope="module")
def api(served):
    return webuiapi_client(webuiapi, served)


def test_txt2img_shapes_and_pixels_match_our_api(api, served):
    r = api.txt2img(
        prompt="red apple",
        negative_prompt="blur",
        seed=7,
        cfg_scale=3.0,
        sampler_name="DDIM",
        eta=0,
        batch_size=2,
        **SMALL,
    )  # webuiapi sends eta 1 by default, which A1111's DDIM honours (as ours: a stochastic DDIM); A1111's
    # path with its GPU's numbers (NV) runs it, as our API with rng "nv"
    assert len(r.images) == 2 and r.images[0].size == (32, 32)
    assert r.info["all_seeds"] == [7, 8] and r.info["sd_model_name"] == "tiny-a"
    assert r.info["infotexts"][0].startswith("red apple\nNegative prompt: blur\nSteps: 3")
    assert r.parameters["prompt"] == "red apple"
    job = served.wait_job(
        served.submit(
            prompt="red apple",
            negative_prompt="blur",
            seed=7,
            guidance=3.0,
            scheduler="ddim",
            num_images=2,
            rng="nv",
            **SMALL,
        )["id"]
    )
    for got, img in zip(r.images, job["images"]):
        ours = Image.open(io.BytesIO(served.request("GET", img["url"]).content)).convert("RGB")
        assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(ours))


def test_random_seed_is_reported(api):
    r = api.txt2img(prompt="pear", seed=-1, sampler_name="Euler a", **SMALL)
    assert r.info["seed"] >= 0 and f"Seed: {r.info['seed']}" in r.info["infotexts"][0]


def test_samplers_models_and_options(api):
    names = api.util_get_sampler_names()
    assert {"Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DDIM", "UniPC"} <= set(names)  # A1111 1.10: schedules apart
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
    worker = threading.Thread(
        target=lambda: result.update(r=api.txt2img(prompt="long", seed=3, steps=500, width=64, height=64))
    )
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


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"restore_faces": True}, "face restoration"),
        ({"sampler_name": "Warp Drive"}, "unknown sampler"),
        ({"width": 30}, "multiple of"),
        ({"sampler_name": "Euler a", "eta": 0.5}, "eta=0.5: latentdiff's Euler a runs with eta 1 only"),
        ({"sampler_name": "Heun", "s_churn": 2}, "s_churn=2: latentdiff's Heun runs with s_churn 0 only"),
        ({"enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+"}, "latentdiff has: Latent, Latent (antialiased)"),
        ({"enable_hr": True, "hr_sampler_name": "DDIM"}, "another hires sampler"),
        ({"enable_hr": True, "hr_resize_x": 64, "hr_resize_y": 48}, "aspect ratio"),
        ({"enable_hr": True, "hr_scale": 1}, "hires scale must be a number in (1, 8]"),
        ({"styles": ["cinematic"]}, "unknown style 'cinematic'; GET /sdapi/v1/prompt-styles lists: film"),
        ({"prompt": "x <lora:add_detail:0.7>"}, "<lora:add_detail:0.7>: no LoRA file add_detail"),
        ({"override_settings": {"sd_model_checkpoint": "tiny-a", "eta_noise_seed_delta": -1}}, "eta_noise_seed_delta"),
    ],
)
def test_unsupported_or_bad_requests_are_4xx(api, kwargs, words):
    with pytest.raises(RuntimeError) as e:
        api.txt2img(**{"prompt": "x", **SMALL, **kwargs})
    status, text = e.value.args
    assert status == 400 and words in text


def test_unknown_field_is_refused_not_dropped(served):
    r = served.request("POST", "/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, "warp_factor": 9})
    assert r.status_code == 400 and "unknown field 'warp_factor'" in r.json()["error"]


def test_left_out_size_steps_and_cfg_are_the_models(served):
    """A1111's own defaults (512x512, 50 steps, CFG 7) are meant for 512 px SD models."""
    r = served.request("POST", "/sdapi/v1/txt2img", json={"prompt": "pear", "seed": 2})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    native = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).size
    assert (info["width"], info["height"]) == native and native[0] < 512
    assert (info["steps"], info["cfg_scale"]) == (3, 3.0)  # tiny-a's latentdiff.json
    assert "Steps: 3, " in info["infotexts"][0] and info["warnings"] == []
    far = served.request(
        "POST",
        "/sdapi/v1/txt2img",
        json={"prompt": "pear", "seed": 2, "steps": 1, "width": 2 * native[0], "height": native[1]},
    )
    warnings = json.loads(far.json()["info"])["warnings"]
    assert len(warnings) == 1 and f"native {native[0]}x{native[1]}" in warnings[0]


def test_enable_hr_maps_to_the_hires_fix(api):
    base = dict(prompt="pear", seed=4, sampler_name="Euler", steps=2, width=32, height=32)
    r = api.txt2img(
        enable_hr=True, hr_scale=2, hr_upscaler="Lanczos", hr_second_pass_steps=1, denoising_strength=0.6, **base
    )
    meta = json.loads(r.images[0].info["latentdiff"])
    assert r.images[0].size == (64, 64) and (meta["width"], meta["height"]) == (32, 32)
    hires = (meta["hires"], meta["hires_upscaler"], meta["hires_steps"], meta["hires_strength"])
    # A1111 denoises all of its 1 hires step; we denoise int(hires_steps * 0.6): 2 of ours run that 1
    assert hires == (2, "lanczos", 2, 0.6)
    assert r.info["denoising_strength"] == 0.6 and r.info["extra_generation_params"]["Hires upscaler"] == "Lanczos"
    hires_fields = "Denoising strength: 0.6, Hires upscale: 2, Hires steps: 1, Hires upscaler: Lanczos"
    assert hires_fields in r.info["infotexts"][0]
    plain = api.txt2img(**base).images[0]
    assert plain.size == (32, 32)
    # hr_resize_x alone: the scale that reaches it; "Latent" (bilinear on the latents) is ours
    r = api.txt2img(enable_hr=True, hr_resize_x=48, hr_upscaler="Latent", **base)
    meta = json.loads(r.images[0].info["latentdiff"])
    assert r.images[0].size == (48, 48) and (meta["hires"], meta["hires_upscaler"]) == (1.5, "latent")


# ---- img2img and inpainting ----------------------------------------------------------------


def _noise(size=(32, 32), seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _b64_png(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_img2img_matches_our_api_and_the_init_image_matters(api, served):
    from latentdiff.workflows.source import pixel_hash

    init = _noise(seed=1)
    args = dict(prompt="red apple", seed=5, cfg_scale=3.0, sampler_name="Euler a", **SMALL)
    r = api.img2img(images=[init], denoising_strength=0.6, **args)
    assert len(r.images) == 1 and r.images[0].size == (32, 32)
    assert r.info["denoising_strength"] == 0.6 and r.info["all_seeds"] == [5]
    assert r.parameters["init_images"] is None and r.parameters["denoising_strength"] == 0.6
    # The same run through our JSON API (init image as base64; A1111's own path with its GPU numbers, as the
    # A1111 API runs img2img) writes the same pixels and records the start.
    job = served.wait_job(
        served.submit(
            prompt="red apple",
            seed=5,
            guidance=3.0,
            scheduler="euler_a",
            rng="nv",
            init_image=_b64_png(init),
            strength=0.6,
            **SMALL,
        )["id"]
    )
    assert job["state"] == "done", job["error"]
    assert "init_image" not in job["params"] and job["params"]["strength"] == 0.6
    meta = job["images"][0]["params"]
    assert meta["strength"] == 0.6 and meta["init_image_hash"] == pixel_hash(init)
    ours = Image.open(io.BytesIO(served.request("GET", job["images"][0]["url"]).content)).convert("RGB")
    got = np.asarray(r.images[0].convert("RGB"))
    assert np.array_equal(got, np.asarray(ours))
    text_only = np.asarray(api.txt2img(**args).images[0].convert("RGB"))
    assert np.abs(got.astype(int) - text_only).mean() > 5, "the init image must change the result"


def test_inpainting_keeps_the_pixels_outside_the_mask(api):
    init, mask = _noise(seed=2), Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    r = api.img2img(
        images=[init],
        mask_image=mask,
        denoising_strength=1.0,
        mask_blur=0,
        inpaint_full_res=False,
        prompt="pear",
        seed=3,
        **SMALL,
    )
    out, src = np.asarray(r.images[0].convert("RGB")).astype(int), np.asarray(init).astype(int)
    outside = np.asarray(mask) == 0
    assert np.array_equal(out[outside], src[outside])
    meta = json.loads(r.images[0].info["latentdiff"])
    assert (meta["inpaint_area"], meta["mask_blur"], meta["strength"]) == ("full", 0, 1.0)
    assert np.abs(out - src)[~outside].mean() > 5, "the masked area must be repainted"
    # inpainting_mask_invert repaints the other side
    r = api.img2img(
        images=[init],
        mask_image=mask,
        inpainting_mask_invert=1,
        denoising_strength=1.0,
        mask_blur=0,
        inpaint_full_res=False,
        prompt="pear",
        seed=3,
        **SMALL,
    )
    out = np.asarray(r.images[0].convert("RGB")).astype(int)
    assert np.array_equal(out[~outside], src[~outside]) and not np.array_equal(out[outside], src[outside])


def test_resize_mode_brings_the_picture_to_width_and_height(api):
    r = api.img2img(
        images=[_noise((48, 24), seed=4)], resize_mode=2, denoising_strength=0.5, prompt="x", seed=1, **SMALL
    )  # 2: A1111's "resize and fill"
    assert r.images[0].size == (32, 32) and json.loads(r.images[0].info["latentdiff"])["resize"] == "fit"


def _bomb_png(side: int = 5000) -> str:
    """A small file that declares side x side pixels."""
    return _b64_png(Image.new("RGB", (side, side), (10, 20, 30)))


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"init_images": [base64.b64encode(b"not an image at all").decode()]}, 400, "init image is not usable"),
        ({"init_images": ["***"]}, 400, "not base64"),
        ({"init_images": []}, 400, "exactly one image"),
        ({"init_images": "BOMB"}, 400, "pixel limit"),
        ({"init_images": "INIT", "mask": base64.b64encode(b"GIF89a broken").decode()}, 400, "mask is not usable"),
        ({"init_images": "INIT", "denoising_strength": 0}, 400, "strength"),
        ({"init_images": "INIT", "mask": "BLACK"}, 400, "all black"),
        ({"init_images": "INIT", "resize_mode": 7}, 422, "resize_mode"),
    ],
)
def test_bad_img2img_input_is_a_4xx_json_line(served, body, status, words):
    pictures = {"BOMB": [_bomb_png()], "INIT": [_b64_png(_noise())], "BLACK": _b64_png(Image.new("L", (32, 32), 0))}
    body = {k: pictures.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    r = served.request("POST", "/sdapi/v1/img2img", json={"prompt": "x", **SMALL, **body})
    assert r.status_code == status and words in r.json()["error"], r.text
    assert "\n" not in r.json()["error"]


def test_oversized_img2img_body_is_413(served):
    big = base64.b64encode(np.random.default_rng(0).bytes(2 * 1024 * 1024)).decode()
    r = served.request("POST", "/sdapi/v1/img2img", json={"prompt": "x", "init_images": [big], **SMALL})
    assert r.status_code == 413 and "larger than" in r.json()["error"]


def test_input_the_worker_refuses_is_still_a_400(api, served):
    """With the named model not loaded yet, the mask is first checked on the worker: still the client's fault."""
    api.txt2img(prompt="x", seed=1, **SMALL)  # the default model is the loaded one (the budget holds one)
    assert served.request("GET", "/v1/health").json()["models_loaded"] == ["tiny-a"]
    body = {
        "prompt": "x",
        **SMALL,
        "init_images": [_b64_png(_noise())],
        "mask": _b64_png(Image.new("L", (32, 32), 0)),
        "override_settings": {"sd_model_checkpoint": "tiny-b"},
    }
    r = served.request("POST", "/sdapi/v1/img2img", json=body)
    assert r.status_code == 400 and "all black" in r.json()["error"], r.text
