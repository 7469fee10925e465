"""ControlNet on the server: the A1111 ControlNet extension's API driven by the real `webuiapi`
client (ControlNetUnit on txt2img/img2img, controlnet_model_list / module_list / detect), our /v1
`controls`, and the confinement of control models to --controlnet-dir."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

webuiapi = pytest.importorskip("webuiapi", reason="the webuiapi client (test extra) is not installed")

SMALL = dict(steps=3, width=32, height=32)


@pytest.fixture(scope="module")
def api(served):
    return webuiapi.WebUIApi(host="127.0.0.1", port=served.port, username="me", password=served.token)


@pytest.fixture(scope="module")
def title(api):
    (name,) = [t for t in api.controlnet_model_list() if t.startswith("cn-tiny")]
    return name


def _picture(size=(48, 40)) -> Image.Image:
    im = Image.radial_gradient("L").resize(size).convert("RGB")
    im.paste((255, 0, 0), (4, 4, 20, 30))
    return im


def _b64(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _rgb(data) -> np.ndarray:
    im = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
    return np.asarray(im.convert("RGB"))


def test_lists_and_version(api, served, title):
    assert title.startswith("cn-tiny [") and len(title) == len("cn-tiny [12345678]")
    assert {"none", "canny", "invert", "lineart_standard", "tile_resample", "shuffle"} <= set(
        api.controlnet_module_list()
    )
    aliases = served.request("GET", "/controlnet/module_list?alias_names=true").json()
    assert "invert (from white bg & black line)" in aliases["module_list"]
    assert aliases["module_detail"]["canny"]["sliders"][1] == {
        "name": "Low Threshold",
        "value": 100,
        "min": 1,
        "max": 255,
    }
    assert api.controlnet_version() == 2
    ours = served.request("GET", "/v1/controls").json()
    assert [m["title"] for m in ours["models"]] == [title] and "canny" in ours["modules"]


def test_txt2img_unit_matches_the_python_api_and_v1(api, served, title):
    """A webuiapi ControlNetUnit gives the pixels of the Python API's equivalent Control, and of a
    /v1 request with the same unit; the info carries the unit as the extension writes it."""
    from latentdiff import Control, Pipeline

    picture = _picture()
    unit = webuiapi.ControlNetUnit(
        image=picture,
        module="canny",
        model=title,
        weight=0.8,
        resize_mode="Just Resize",
        processor_res=64,
        threshold_a=100,
        threshold_b=200,
        guidance_start=0.0,
        guidance_end=0.7,
        control_mode=1,
    )
    r = api.txt2img(prompt="red apple", seed=5, cfg_scale=3.0, sampler_name="Euler a", controlnet_units=[unit], **SMALL)
    assert len(r.images) == 1
    line = r.info["extra_generation_params"]["ControlNet 0"]
    assert line.startswith(f"Module: canny, Model: {title}, Weight: 0.8, Resize Mode: Just Resize, Processor Res: 64")
    assert line.endswith("Guidance End: 0.7, Pixel Perfect: False, Control Mode: My prompt is more important")
    assert f'ControlNet 0: "{line}"' in r.info["infotexts"][0]

    model = served.workdir / "models" / "tiny-a"
    pipe = Pipeline.from_pretrained(model, device="cpu", dtype="fp32")
    pipe.progress = False
    control = Control(picture, model.parent / "controlnet" / "cn-tiny", 0.8, 0.0, 0.7, "stretch", "canny", 64, 100, 200)
    (ours,) = pipe(
        "red apple",
        steps=3,
        guidance=3.0,
        width=32,
        height=32,
        seed=5,
        scheduler="euler_a",
        controls=[control],
        control_mode="prompt",
    )
    assert np.array_equal(_rgb(r.images[0]), _rgb(ours))
    (plain,) = pipe("red apple", steps=3, guidance=3.0, width=32, height=32, seed=5, scheduler="euler_a")
    assert not np.array_equal(_rgb(plain), _rgb(ours))  # the unit steers the picture

    v1 = {"image": _b64(picture), "model": "cn-tiny", "weight": 0.8, "end": 0.7, "resize": "stretch"}
    v1.update(module="canny", processor_res=64, threshold_a=100, threshold_b=200)
    job = served.submit(
        prompt="red apple", seed=5, guidance=3.0, scheduler="euler_a", controls=[v1], control_mode="prompt", **SMALL
    )
    done = served.wait_job(job["id"])
    assert done["params"]["controls"][0]["model"] == title and "image" not in done["params"]["controls"][0]
    assert np.array_equal(_rgb(served.request("GET", done["images"][0]["url"]).content), _rgb(ours))


def test_img2img_unit_without_image_uses_the_init_image(api, title):
    unit = webuiapi.ControlNetUnit(model=title, module="invert", resize_mode="Crop and Resize")
    r = api.img2img(
        images=[_picture()], prompt="pear", seed=2, denoising_strength=0.6, eta=1.0, controlnet_units=[unit], **SMALL
    )
    assert len(r.images) == 1 and "Module: invert" in r.info["infotexts"][0]


def test_pixel_perfect_sets_the_processor_resolution(api, title):
    """The extension's rule: the picture's short side scaled as it is to reach the size (crop: the
    larger factor): a 40x32 picture for 64x64 works at 64 px, whatever processor_res says."""
    unit = webuiapi.ControlNetUnit(
        image=_picture((40, 32)),
        module="canny",
        model=title,
        pixel_perfect=True,
        processor_res=512,
        resize_mode="Crop and Resize",
    )
    r = api.txt2img(prompt="x", seed=1, sampler_name="Euler a", controlnet_units=[unit], steps=2, width=64, height=64)
    assert "Processor Res: 64," in r.info["extra_generation_params"]["ControlNet 0"]


def test_masked_inpainting_needs_the_uncropped_control(served):
    """The extension crops a unit's picture to the masked region when inpainting only that region
    (inpaint_crop_input_image, true when left out); latentdiff does not, so it asks for false."""
    body = {**TXT, "init_images": [UNIT["image"]], "mask": UNIT["image"], "inpaint_full_res": True}
    for unit, status in (({**UNIT}, 400), ({**UNIT, "inpaint_crop_input_image": False}, 200)):
        r = served.request(
            "POST", "/sdapi/v1/img2img", json={**body, "alwayson_scripts": {"controlnet": {"args": [unit]}}}
        )
        assert r.status_code == status, r.text
    assert (
        "inpaint_crop_input_image=True"
        in served.request(
            "POST", "/sdapi/v1/img2img", json={**body, "alwayson_scripts": {"controlnet": {"args": [UNIT]}}}
        ).json()["error"]
    )


def test_detect_through_webuiapi(api):
    from latentdiff.images.preprocess import preprocess

    picture = _picture()
    r = api.controlnet_detect([picture], module="canny", processor_res=64, threshold_a=100, threshold_b=200)
    assert r.info == "Success" and len(r.images) == 1
    assert np.array_equal(_rgb(r.images[0]), _rgb(preprocess(picture, "canny", 64, 100, 200)))


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"weight": 3}, "args[0].weight"),
        ({"model": "../tiny-a"}, "not one of the control models"),
        ({"model": "None"}, "give a control model"),
        ({"module": "depth_midas"}, "weights latentdiff does not ship"),
        ({"guidance_start": 0.9, "guidance_end": 0.2}, "guidance_start (0.9) is above guidance_end"),
        ({"resize_mode": "Zoom"}, "resize_mode must be one of"),
        ({"processor_res": 10}, "from 64 to 2048"),
        ({"threshold_a": 300}, "threshold A of canny"),
        ({"pixel_perfect": True}, "pixel_perfect gives a processor resolution of 27"),  # fit: 32/48 * 40
        ({"control_mode": 7}, "control_mode must be one of"),
    ],
)
def test_bad_units_are_400(api, title, changes, words):
    unit = webuiapi.ControlNetUnit(image=_picture(), module="canny", model=title)
    for k, v in changes.items():
        setattr(unit, k, v)
    with pytest.raises(RuntimeError) as e:
        api.txt2img(prompt="x", sampler_name="Euler a", controlnet_units=[unit], **SMALL)
    status, text = e.value.args
    assert status == 400 and words in text, text


UNIT = {"image": _b64(_picture()), "model": "cn-tiny", "module": "canny"}
TXT = {"prompt": "x", **SMALL, "sampler_name": "Euler a"}


@pytest.mark.parametrize(
    "unit, words",
    [
        ({**UNIT, "mask": UNIT["image"]}, "a unit's mask"),
        ({**UNIT, "warp": 1}, "args[0].warp"),
        ({**UNIT, "hr_option": "Low res only"}, None),  # no hires: the extension ignores it
        ({**UNIT, "input_image": UNIT["image"]}, "give image or its older name input_image"),
        ({**UNIT, "advanced_weighting": [1.0] * 13}, "per-layer weights"),
        ({**UNIT, "image": {"image": UNIT["image"], "mask": UNIT["image"]}}, "a unit's mask"),
        ({**UNIT, "image": "not base64!"}, "is not base64"),
        ({**UNIT, "enabled": False, "model": "../../etc"}, None),  # disabled: skipped
        ("unit", "must be a ControlNet unit"),
    ],
)
def test_unit_fields_honoured_or_refused(served, unit, words):
    body = {**TXT, "alwayson_scripts": {"controlnet": {"args": [unit]}}}
    r = served.request("POST", "/sdapi/v1/txt2img", json=body)
    if words is None:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 400 and words in r.json()["error"], r.text


def test_one_control_mode_and_other_extensions_refused(served):
    two = [{**UNIT, "control_mode": 0}, {**UNIT, "control_mode": "ControlNet is more important"}]
    r = served.request("POST", "/sdapi/v1/txt2img", json={**TXT, "alwayson_scripts": {"ControlNet": {"args": two}}})
    assert r.status_code == 400 and "one control mode" in r.json()["error"]
    other = {"ControlNet": {"args": [UNIT]}, "ADetailer": {"args": [True, {}]}}
    r = served.request("POST", "/sdapi/v1/txt2img", json={**TXT, "alwayson_scripts": other})
    assert r.status_code == 400 and "extensions other than ControlNet" in r.json()["error"]


@pytest.mark.parametrize(
    "unit, status, words",
    [
        ({**UNIT, "model": "/etc/passwd"}, 400, "not one of the control models"),
        ({**UNIT, "model": "../controlnet/cn-tiny"}, 400, "not one of the control models"),
        ({**UNIT, "weight": 2.5}, 422, "controls.0.weight"),
        ({**UNIT, "start": 0.5, "end": 0.5}, 400, "start (0.5) must be below end"),
        ({**UNIT, "resize": "zoom"}, 422, "controls.0.resize"),
        ({**UNIT, "image": "QUJD"}, 400, "controls[0].image is not usable"),
        ({**UNIT, "path": "/tmp"}, 422, "controls.0.path"),
    ],
)
def test_v1_units_checked_before_the_queue(served, unit, status, words):
    r = served.request("POST", "/v1/generate", json={"prompt": "x", **SMALL, "controls": [unit]})
    assert r.status_code == status and words in r.json()["error"], r.text


def test_v1_unit_count_and_mode_bounded(served):
    r = served.request("POST", "/v1/generate", json={"prompt": "x", "controls": [UNIT] * 9})
    assert r.status_code == 422 and "controls" in r.json()["error"]
    r = served.request("POST", "/v1/generate", json={"prompt": "x", "controls": [UNIT], "control_mode": "loud"})
    assert r.status_code == 422 and "control_mode" in r.json()["error"]


def test_control_models_confined_to_their_folder(tmp_path):
    from latentdiff.errors import UsageError
    from latentdiff.server.config import ServeConfig
    from latentdiff.server.controls import ControlModels

    root, outside = tmp_path / "cn", tmp_path / "elsewhere"
    for d in (root / "a", outside / "b"):
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        (d / "diffusion_pytorch_model.safetensors").write_bytes(b"x" * 100)
    (root / "c.safetensors").write_bytes(b"y" * 100)
    (root / "notes.txt").write_text("not a model")
    (root / "link").symlink_to(outside / "b")
    models = ControlModels(root.resolve())
    assert [e["name"] for e in models.entries()] == ["a", "c"]
    assert models.resolve("C.safetensors", "m")[1] == (root / "c.safetensors").resolve()
    for name in ("link", "b", str(outside / "b"), "notes", "../elsewhere/b"):
        with pytest.raises(UsageError, match="not one of the control models"):
            models.resolve(name, "m")
    with pytest.raises(UsageError, match="no control models"):
        ControlModels(None).resolve("a", "m")
    with pytest.raises(UsageError, match="--controlnet-dir"):
        ServeConfig(controlnet_dir=str(tmp_path / "missing"))
    assert ServeConfig(models_dir=str(tmp_path)).control_dir() is None
    assert ServeConfig(controlnet_dir=str(root)).control_dir() == root.resolve()
