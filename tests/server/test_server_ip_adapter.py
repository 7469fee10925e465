"""IP-Adapter image prompts on the server: /v1 `image_prompts` and the A1111 ControlNet extension's
IP-Adapter units through the real `webuiapi` client, each giving the pixels of the Python API's
ImagePrompt; FaceID embeddings as a base64 .npy; the adapters confined to --ip-adapter-dir (here
the served models' ipadapter/ folder, holding the h94 repository's models/ layout)."""

import base64
import io

import numpy as np
import pytest
from ip_adapter_files import FACE_DIM
from PIL import Image

webuiapi = pytest.importorskip("webuiapi", reason="the webuiapi client (test extra) is not installed")

SMALL = dict(steps=3, width=32, height=32)
BASE = "ip-adapter_sd15.safetensors"


@pytest.fixture(scope="module")
def api(served):
    return webuiapi.WebUIApi(host="127.0.0.1", port=served.port, username="me", password=served.token)


@pytest.fixture(scope="module")
def folder(served):
    return served.workdir / "models" / "ipadapter" / "models"


@pytest.fixture(scope="module")
def pipe(served):
    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(served.workdir / "models" / "tiny-a", device="cpu", dtype="fp32")
    pipe.progress = False
    return pipe


def _picture() -> Image.Image:
    im = Image.linear_gradient("L").resize((40, 48)).convert("RGB")
    im.paste((0, 200, 40), (5, 5, 25, 30))
    return im


def _b64(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _npy(array) -> str:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode()


def _rgb(data) -> np.ndarray:
    im = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
    return np.asarray(im.convert("RGB"))


def _served_pixels(served, **body) -> np.ndarray:
    job = served.wait_job(served.submit(prompt="red apple", seed=4, scheduler="euler_a", **SMALL, **body)["id"])
    assert job["state"] == "done", job["error"]
    return _rgb(served.request("GET", job["images"][0]["url"]).content), job


def _ours(pipe, prompts) -> np.ndarray:
    (image,) = pipe("red apple", seed=4, scheduler="euler_a", guidance=3.0, image_prompts=prompts, **SMALL)
    return _rgb(image)


def test_lists(served, api):
    ours = served.request("GET", "/v1/controls").json()["ip_adapters"]
    names = {m["name"] for m in ours}
    assert {"ip-adapter_sd15", "ip-adapter-plus_sd15", "ip-adapter-faceid_sd15"} == names
    assert len(ours) == 6  # .safetensors and .bin of each; the image_encoder folder is none
    titles = api.controlnet_model_list()
    assert {m["title"] for m in ours} <= set(titles) and any(t.startswith("cn-tiny [") for t in titles)
    assert {"ip-adapter_clip_sd15", "ip-adapter_clip_sdxl_plus_vith"} <= set(api.controlnet_module_list())


def test_v1_image_prompts_match_the_python_api(served, pipe, folder):
    """A base and a Plus prompt (each its own adapter and scale) give the Python API's pixels."""
    from latentdiff import ImagePrompt

    picture = _picture()
    body = [
        {"image": _b64(picture), "adapter": BASE, "scale": 0.7},
        {"image": _b64(picture.rotate(90)), "adapter": "ip-adapter-plus_sd15.safetensors", "scale": 1.5},
    ]
    got, job = _served_pixels(served, guidance=3.0, image_prompts=body)
    assert job["params"]["image_prompts"][0]["adapter"].startswith("ip-adapter_sd15 [")
    prompts = [
        ImagePrompt(picture, 0.7, folder / BASE),
        ImagePrompt(picture.rotate(90), 1.5, folder / "ip-adapter-plus_sd15.safetensors"),
    ]
    ours = _ours(pipe, prompts)
    assert np.array_equal(got, ours)
    assert not np.array_equal(ours, _ours(pipe, None))  # the prompts steer the picture


def test_v1_faceid_embeddings_as_npy(served, pipe, folder):
    from latentdiff import ImagePrompt

    faces = np.random.default_rng(0).standard_normal((2, FACE_DIM)).astype(np.float32)
    body = [{"image": _npy(faces), "adapter": "ip-adapter-faceid_sd15.safetensors", "scale": 0.9}]
    got, _ = _served_pixels(served, guidance=3.0, image_prompts=body)
    assert np.array_equal(got, _ours(pipe, [ImagePrompt(faces, 0.9, folder / "ip-adapter-faceid_sd15.safetensors")]))


def test_a1111_ip_adapter_unit_matches_the_python_api(api, pipe, folder):
    """The unit names the file (the tiny files' A1111 short hashes are all the empty one: A1111
    hashes 64 KiB from 1 MiB on, so `name [hash]` names both the .safetensors and the .bin)."""
    from latentdiff import ImagePrompt

    picture = _picture()
    unit = webuiapi.ControlNetUnit(image=picture, module="ip-adapter_clip_sd15", model=BASE, weight=0.6)
    r = api.txt2img(prompt="red apple", seed=4, cfg_scale=3.0, sampler_name="Euler a", controlnet_units=[unit], **SMALL)
    ours = _ours(pipe, [ImagePrompt(picture, 0.6, folder / BASE)])
    assert np.array_equal(_rgb(r.images[0]), ours)
    assert not np.array_equal(ours, _ours(pipe, [ImagePrompt(picture, 0.3, folder / BASE)]))


@pytest.mark.parametrize(
    "prompt, words",
    [
        ({"adapter": "../../tiny-a"}, "not one of the IP-Adapters of --ip-adapter-dir"),
        ({"adapter": "image_encoder"}, "not one of the IP-Adapters"),
        ({"adapter": "ip-adapter_sd15"}, "names more than one"),
        ({"scale": 2.5}, "image_prompts.0.scale"),
        ({"image": "bm90IGFuIGltYWdl"}, "image_prompts[0].image is not usable"),
        ({"image": "%%%"}, "not base64"),
        ({"image": base64.b64encode(b"\x93NUMPY garbage").decode()}, "not a usable numpy .npy file"),
        ({"weight": 1}, "image_prompts.0.weight"),
    ],
)
def test_bad_v1_prompts_are_4xx(served, prompt, words):
    body = {"image": _b64(_picture()), "adapter": BASE, **prompt}
    r = served.request("POST", "/v1/generate", json={"prompt": "x", **SMALL, "image_prompts": [body]})
    assert r.status_code in (400, 422) and words in r.text, r.text
    assert "\n" not in r.json()["error"]


def test_pickled_npy_is_refused(served):
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    body = {"image": base64.b64encode(buf.getvalue()).decode(), "adapter": "ip-adapter-faceid_sd15.safetensors"}
    r = served.request("POST", "/v1/generate", json={"prompt": "x", **SMALL, "image_prompts": [body]})
    assert r.status_code == 400 and "numpy .npy" in r.json()["error"], r.text


UNIT = {"image": _b64(_picture()), "model": BASE, "module": "ip-adapter_clip_sd15"}


@pytest.mark.parametrize(
    "unit, words",
    [
        ({**UNIT, "guidance_start": 0.2}, "guidance_start=0.2"),
        ({**UNIT, "guidance_end": 0.5}, "guidance_end=0.5"),
        ({**UNIT, "module": "ip-adapter_face_id"}, "face detector's weights"),
        ({**UNIT, "module": "canny"}, "an IP-Adapter unit takes one of the modules"),
        ({**UNIT, "model": "cn-tiny"}, "not one of the IP-Adapters"),
        ({**UNIT, "weight": 2.5}, "args[0].weight"),
        ({**UNIT, "control_mode": 2}, "control_mode=2"),
    ],
)
def test_bad_a1111_ip_units_are_400(served, unit, words):
    body = {"prompt": "x", **SMALL, "sampler_name": "Euler a", "alwayson_scripts": {"controlnet": {"args": [unit]}}}
    r = served.request("POST", "/sdapi/v1/txt2img", json=body)
    assert r.status_code == 400 and words in r.json()["error"], r.text


def test_adapters_and_encoders_stay_inside_the_folder(tmp_path):
    """The h94 layout's `../models/image_encoder` beside an adapter at the folder's top lies outside
    it: not passed to the pipeline; a link leading out of the folder is no adapter."""
    from latentdiff.server.image_prompts import AdapterModels

    root, outside = tmp_path / "ipadapter", tmp_path / "models"
    for folder in (root / "image_encoder", root / "sdxl_models" / "image_encoder", outside / "image_encoder"):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
    for path in (root / "a.safetensors", root / "sdxl_models" / "b.bin", outside / "c.safetensors"):
        path.write_bytes(b"\0" * 64)
    (root / "c.safetensors").symlink_to(outside / "c.safetensors")
    models = AdapterModels(root.resolve())
    assert [e["path"].name for e in models.entries()] == ["a.safetensors", "b.bin"]
    assert models.encoders(root / "a.safetensors") == (str(root.resolve() / "image_encoder"),)
    assert models.encoders(root / "sdxl_models" / "b.bin") == (str(root.resolve() / "sdxl_models" / "image_encoder"),)
    with pytest.raises(Exception, match="not one of the IP-Adapters"):
        models.resolve("c", "image_prompts[0].adapter")


def test_embeddings_for_a_picture_adapter_fail_the_job_in_one_line(served):
    body = [{"image": _npy(np.zeros(FACE_DIM, "f4")), "adapter": BASE}]
    job = served.wait_job(served.submit(prompt="x", **SMALL, image_prompts=body)["id"])
    assert job["state"] == "failed" and "image_prompts[0].image" in job["error"] and "\n" not in job["error"]
