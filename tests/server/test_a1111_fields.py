"""Every A1111 txt2img/img2img field and setting of a1111_fields.py, at the parse level: an honoured
one changes what reaches the queue (or the answer) as in A1111, one of no effect changes nothing, a
refused one is a 400 naming it. The app runs in this process with the tiny model (inprocess.py); the
worker only records the jobs. The docs' table is the code's."""

import base64
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from inprocess import serve_in_process
from PIL import Image

pytest.importorskip("fastapi", reason="the server extra (latentdiff[serve]) is not installed")

from latentdiff.server.a1111_fields import (  # noqa: E402
    A1111_IMG2IMG,
    A1111_TXT2IMG,
    FIELDS,
    FORGE,
    HONOURED,
    NO_EFFECT,
    SETTINGS,
    markdown,
)
from latentdiff.server.a1111_params import Img2ImgRequest  # noqa: E402

_served_in_process = pytest.fixture(scope="module", name="served_in_process")(serve_in_process)


@pytest.fixture(scope="module")
def in_process(served_in_process):
    """The in-process app, its worker recording each job with its pictures (a finished job lets them go)."""
    from latentdiff.server.jobs import JobQueue

    ran, server = served_in_process.ran, served_in_process.server
    server.queue.stop(timeout=5)
    server.queue = JobQueue(lambda job: ran.append(SimpleNamespace(**vars(job))), size=4, keep=8)
    return served_in_process


DOCS = Path(__file__).parents[2] / "docs" / "serving.md"


def _b64(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


PIC = _b64(Image.new("RGB", (32, 32), (200, 30, 30)))
MASK = _b64(Image.fromarray(np.repeat([[0] * 16 + [255] * 16], 32, axis=0).astype(np.uint8)))  # right half
SMALL = {"prompt": "x", "steps": 2, "width": 32, "height": 32, "seed": 1}
UNIT = {"enabled": True, "image": PIC, "model": "cn-fake [e3b0c442]", "module": "none"}
INFOTEXT = "a cat\nNegative prompt: blur\nSteps: 4, Sampler: Euler, CFG scale: 5, Seed: 3, Size: 48x40, Clip skip: 2"
EULER, HR, INPAINT = {"sampler_name": "Euler"}, {"enable_hr": True}, {"mask": MASK}
LANCZOS = {"hr_upscaler": "Lanczos"}
# field -> (route, the body it joins, its value): an honoured field's value changes the job, or
# the answer where it says so (ANSWER); a refused one's is not neutral (a 400 naming it).
CASES = {
    "prompt": ("txt2img", {}, "y"),
    "negative_prompt": ("txt2img", {}, "blur"),
    "seed": ("txt2img", {}, 5),
    "sampler_name": ("txt2img", {}, "DDIM"),
    "sampler_index": ("txt2img", {}, "DPM++ 2M"),
    "scheduler": ("txt2img", EULER, "Karras"),
    "batch_size": ("txt2img", {}, 2),
    "n_iter": ("txt2img", {}, 3),
    "steps": ("txt2img", {}, 3),
    "cfg_scale": ("txt2img", {}, 5.0),
    "distilled_cfg_scale": ("txt2img", {}, 4.0),  # Forge's; on this SD model kept for the worker, which drops it
    "width": ("txt2img", {}, 48),
    "height": ("txt2img", {}, 48),
    "denoising_strength": ("txt2img", HR, 0.3),
    "eta": ("txt2img", {"sampler_name": "DDIM"}, 0.5),
    "s_churn": ("txt2img", EULER, 1.0),
    "s_tmin": ("txt2img", {**EULER, "s_churn": 1.0}, 0.5),
    "s_tmax": ("txt2img", {**EULER, "s_churn": 1.0}, 5.0),
    "s_noise": ("txt2img", EULER, 0.9),
    "override_settings": ("txt2img", {}, {"CLIP_stop_at_last_layers": 2}),
    "infotext": ("txt2img", {"prompt": "kept"}, INFOTEXT),
    "disable_extra_networks": ("txt2img", {"prompt": "x <lora:foo:0.7>"}, True),
    "alwayson_scripts": ("txt2img", {}, {"controlnet": {"args": [UNIT]}}),
    "enable_hr": ("txt2img", {}, True),
    "hr_scale": ("txt2img", HR, 1.5),
    "hr_upscaler": ("txt2img", HR, "Lanczos"),
    "hr_second_pass_steps": ("txt2img", HR, 2),
    "hr_resize_x": ("txt2img", HR, 48),
    "hr_resize_y": ("txt2img", HR, 48),
    "init_images": ("img2img", {}, [_b64(Image.new("RGB", (32, 32), "blue"))]),
    "resize_mode": ("img2img", {}, 2),
    "mask": ("img2img", {}, MASK),
    "mask_blur": ("img2img", INPAINT, 8),
    "mask_blur_x": ("img2img", {**INPAINT, "mask_blur_y": 8}, 8),
    "mask_blur_y": ("img2img", {**INPAINT, "mask_blur_x": 8}, 8),
    "inpainting_fill": ("img2img", INPAINT, 2),  # A1111's path: all four; diffusers': 1, 0 as 1, 2 and 3 refused
    "inpaint_full_res": ("img2img", INPAINT, False),
    "inpaint_full_res_padding": ("img2img", INPAINT, 16),
    "inpainting_mask_invert": ("img2img", INPAINT, 1),
    "denoising_strength (img2img)": ("img2img", {}, 0.3),
    # of no effect
    "do_not_save_samples": ("txt2img", {}, True),
    "do_not_save_grid": ("txt2img", {}, True),
    "save_images": ("txt2img", {}, True),
    "comments": ("txt2img", {}, {"note": 1}),
    "force_task_id": ("txt2img", {}, "task-1"),
    "script_args": ("txt2img", {}, [1, 2]),
    "refiner_switch_at": ("txt2img", {"refiner_checkpoint": "tiny"}, 0.5),  # refused without it
    "refiner_checkpoint": ("txt2img", {"refiner_switch_at": 0.5}, "tiny"),  # its SDXL check runs with the job
    "image_cfg_scale": ("img2img", {}, 1.5),
    "styles": ("txt2img", {}, ["cinematic"]),  # styles.csv beside the model (inprocess.py)
    # refused unless neutral
    "restore_faces": ("txt2img", {}, True),
    "tiling": ("txt2img", {}, True),
    "s_min_uncond": ("txt2img", {}, 1.0),
    "firstpass_image": ("txt2img", {}, PIC),
    "script_name": ("txt2img", {}, "x/y/z plot"),
    "firstphase_width": ("txt2img", HR, 64),
    "firstphase_height": ("txt2img", HR, 64),
    "hr_checkpoint_name": ("txt2img", HR, "tiny-b"),
    "hr_sampler_name": ("txt2img", {**HR, **EULER}, "DDIM"),
    "hr_scheduler": ("txt2img", {**HR, **EULER}, "Karras"),
    "hr_prompt": ("txt2img", HR, "other"),
    "hr_negative_prompt": ("txt2img", HR, "other"),
    "hr_additional_modules": ("txt2img", HR, ["x"]),
    "initial_noise_multiplier": ("img2img", {}, 0.5),
    "latent_mask": ("img2img", {}, MASK),
    "mask_round": ("img2img", INPAINT, False),
    # A1111's path runs them: with a sampler of it (the tiny model's own PNDM is none)
    "subseed": ("txt2img", {"subseed_strength": 0.5, **EULER}, 5),
    "subseed_strength": ("txt2img", EULER, 0.5),
    "seed_resize_from_h": ("txt2img", {"seed_resize_from_w": 64, **EULER}, 48),  # A1111 resizes only with both
    "seed_resize_from_w": ("txt2img", {"seed_resize_from_h": 64, **EULER}, 48),
}
ANSWER = {"send_images", "include_init_images", "override_settings_restore_afterwards"}


def post(in_process, route: str, body: dict, small: dict = SMALL):
    base = {**small, **({"init_images": [PIC]} if route == "img2img" else {})}
    r = in_process.client.post(f"/sdapi/v1/{route}", json={**base, **body})
    jobs = list(in_process.ran)
    in_process.ran.clear()
    return r, jobs


def job_of(in_process, route: str, body: dict, refused_ok: bool = False, small: dict = SMALL):
    """What the job of `body` holds (its parameters, pictures, warnings); None where it is refused
    and `refused_ok`."""
    r, jobs = post(in_process, route, body, small)
    if refused_ok and r.status_code == 400:
        return None
    assert r.status_code == 200, r.text
    (job,) = jobs
    pictures = job.inputs
    controls = [u.image for u in pictures.controls]
    return job.params, pictures.init_image, pictures.invert_mask, controls, job.a1111_rng, job.warnings


def test_the_docs_table_is_the_codes():
    text = DOCS.read_text()
    start = text.index("<!-- a1111-fields")
    table = text[text.index("\n", start) + 1 : text.index("<!-- /a1111-fields -->")]
    assert table.strip() == markdown().strip(), "docs/serving.md: paste latentdiff.server.a1111_fields.markdown()"


def test_the_table_holds_every_a1111_field_and_reads_what_the_request_reads():
    assert set(FIELDS) == {*A1111_TXT2IMG, *A1111_IMG2IMG, *FORGE}
    assert len(A1111_TXT2IMG) == 55 and len(set(A1111_TXT2IMG)) == 55
    typed = set(Img2ImgRequest.model_fields)
    assert typed <= {k for k, f in FIELDS.items() if f.how == HONOURED}
    assert {k for k, f in FIELDS.items() if f.how == HONOURED} - typed == {"alwayson_scripts"}
    assert set(CASES) - {"denoising_strength (img2img)"} | ANSWER == set(FIELDS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_field_is_honoured_or_refused(in_process, name):
    route, base, value = CASES[name]
    field = name.split(" ")[0]
    how = FIELDS[field].how
    if how in (HONOURED, NO_EFFECT):
        without = job_of(in_process, route, base, refused_ok=True)  # disable_extra_networks: refused without
        given = job_of(in_process, route, {**base, field: value})
        assert (given != without) == (how == HONOURED), (given, without)
    else:
        r, jobs = post(in_process, route, {**base, field: value})
        assert r.status_code == 400 and field in r.json()["error"] and not jobs, r.text


def test_the_honoured_fields_map_as_a1111_reads_them(in_process):
    params = job_of(in_process, "txt2img", {**EULER, "s_churn": 1.0, "override_settings": {"s_churn": 2.0}})[0]
    assert params["s_churn"] == 2.0  # A1111 takes an s_ setting other than its default over the field
    params = job_of(in_process, "txt2img", {"sampler_name": "DDIM", "override_settings": {"eta_ddim": 0.3}})[0]
    assert params["eta"] == 0.3
    assert "eta" not in job_of(in_process, "txt2img", {"sampler_name": "DPM++ 2M", "eta": 0.3})[0]  # A1111: no effect
    assert "eta" not in job_of(in_process, "txt2img", {"sampler_name": "Euler a", "eta": 1.0})[0]  # webuiapi's default
    params = job_of(in_process, "txt2img", {"prompt": "kept", "infotext": INFOTEXT}, small={"steps": 2})[0]
    assert (params["prompt"], params["negative_prompt"], params["steps"], params["seed"]) == ("kept", "blur", 2, 3)
    assert (params["width"], params["height"], params["clip_skip"], params["scheduler"]) == (48, 40, 2, "euler")
    assert params["guidance"] == 5  # the body's fields win, the infotext fills the others (A1111's API)
    hires = "x\nSteps: 2, Seed: 1, Size: 32x32, Denoising strength: 0.4, Hires upscale: 1.5, Hires upscaler: Latent"
    params = job_of(in_process, "txt2img", {"infotext": hires})[0]
    assert (params["hires"], params["hires_strength"], params["hires_upscaler"]) == (1.5, 0.4, "latent")
    params = job_of(in_process, "img2img", {"infotext": hires})[0]  # img2img: the strength, no hires
    assert params["strength"] == 0.4 and "hires" not in params
    assert (
        job_of(in_process, "txt2img", {"prompt": "x <lora:foo:0.7>", "disable_extra_networks": True})[0]["prompt"]
        == "x"
    )
    off_path = {**INPAINT, "sampler_name": "DDPM"}  # diffusers' path: original, fill as original
    warnings = job_of(in_process, "img2img", {**off_path, "inpainting_fill": 0})[-1]
    assert "inpainting_fill 0 (fill) ran as 1 (original)" in warnings[0]
    assert job_of(in_process, "img2img", {**off_path, "inpainting_fill": 1})[-1] == []
    r, jobs = post(in_process, "img2img", {**off_path, "inpainting_fill": 2})
    assert r.status_code == 400 and "inpainting_fill" in r.json()["error"] and not jobs, r.text
    for full_res in (False, True):  # A1111's own path, either inpaint area: its masked content
        for fill, content in ((0, "fill"), (2, "latent_noise"), (3, "latent_nothing")):
            body = {**INPAINT, "inpaint_full_res": full_res, "inpainting_fill": fill}
            params, *_, rng, warnings = job_of(in_process, "img2img", body)
            assert (params["masked_content"], rng, warnings) == (content, "nv", [])


@pytest.mark.parametrize(
    "body, words",
    [
        ({"sampler_name": "Euler a", "eta": 0.5}, "eta=0.5: latentdiff's Euler a runs with eta 1 only"),
        ({"sampler_name": "DPM2", "s_noise": 0.5}, "s_noise=0.5: latentdiff's DPM2 runs with s_noise 1 only"),
        ({"infotext": "x\nSteps: 3, CFG scale: many, Seed: 1"}, "infotext: CFG scale: 'many' is not a number"),
        ({"mask_blur_x": 3}, "is a field of /sdapi/v1/img2img"),
        ({"override_settings": {"CLIP_stop_at_last_layers": 0}}, "override_settings.CLIP_stop_at_last_layers"),
    ],
)
def test_bad_values_name_the_field(in_process, body, words):
    r, jobs = post(in_process, "txt2img", body)
    assert r.status_code == 400 and words in r.json()["error"] and not jobs, r.text


def test_the_answer_fields(in_process):
    r, _ = post(in_process, "txt2img", {"send_images": False})
    assert r.status_code == 200 and r.json()["images"] == []
    shown = post(in_process, "img2img", {"include_init_images": True})[0].json()["parameters"]
    assert (
        shown["init_images"] == [PIC] and post(in_process, "img2img", {})[0].json()["parameters"]["init_images"] is None
    )
    server = in_process.server
    try:
        body = {"override_settings": {"CLIP_stop_at_last_layers": 3}, "override_settings_restore_afterwards": False}
        assert job_of(in_process, "txt2img", body)[0]["clip_skip"] == 3
        assert job_of(in_process, "txt2img", {})[0]["clip_skip"] == 3  # kept, as A1111 keeps it
        assert in_process.client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 3
    finally:
        server.a1111_settings.clear()


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_each_setting_is_honoured_or_refused(in_process, key):
    values = {"sd_model_checkpoint": "tiny", "CLIP_stop_at_last_layers": 2, "eta_ddim": 0.5, "eta_ancestral": 0.5}
    values.update(s_churn=1.0, s_tmin=0.5, s_tmax=5.0, s_noise=0.9, sd_vae="other.safetensors", s_min_uncond=1.0)
    values.update(eta_noise_seed_delta=31337, samples_format="jpg", sd_checkpoint_hash="abcd", randn_source="CPU")
    values.update(
        uni_pc_variant="vary_coeff", uni_pc_skip_type="logSNR", uni_pc_order=2, uni_pc_lower_order_final=False
    )
    unipc = "UniPC" if key.startswith("uni_pc_") else "Euler"
    base = {"sampler_name": {"eta_ddim": "DDIM", "eta_ancestral": "TCD"}.get(key, unipc)}
    values["hires_fix_refiner_pass"] = "both passes"
    base.update({"enable_hr": True} if key == "hires_fix_refiner_pass" else {})
    base.update({"s_churn": 1.0} if key in ("s_tmin", "s_tmax") else {})
    body = {**base, "override_settings": {key: values[key]}}
    if SETTINGS[key].how == HONOURED:
        given, without = job_of(in_process, "txt2img", body), job_of(in_process, "txt2img", base)
        assert given != without or key == "sd_model_checkpoint"  # the default model by name: the same job
        assert in_process.client.post("/sdapi/v1/options", json={key: values[key]}).status_code == 200
        in_process.server.a1111_settings.clear()
        in_process.server.a1111_model = None
    else:
        r, jobs = post(in_process, "txt2img", body)
        assert r.status_code == 400 and key in r.json()["error"] and not jobs, r.text
        r = in_process.client.post("/sdapi/v1/options", json={key: values[key]})
        assert r.status_code == 400 and key in r.json()["error"], r.text
        neutral = SETTINGS[key].neutral[0]
        assert job_of(in_process, "txt2img", {**base, "override_settings": {key: neutral}})


def test_png_info_and_info_keys(in_process):
    im = Image.new("RGB", (8, 8))
    from PIL import PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", INFOTEXT)
    meta.add_text("latentdiff", '{"seed": 3}')
    buf = io.BytesIO()
    im.save(buf, format="PNG", pnginfo=meta)
    r = in_process.client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(buf.getvalue()).decode()})
    got = r.json()
    assert got["info"] == INFOTEXT and got["items"] == {"latentdiff": '{"seed": 3}'}
    assert got["parameters"]["Size-1"] == "48" and got["parameters"]["Prompt"] == "a cat"
    assert in_process.client.post("/sdapi/v1/png-info", json={"image": "nope"}).status_code == 400
    info = json.loads(post(in_process, "txt2img", {})[0].json()["info"])
    keys = "prompt all_prompts negative_prompt all_negative_prompts seed all_seeds subseed all_subseeds "
    keys += "subseed_strength width height sampler_name cfg_scale steps batch_size restore_faces "
    keys += "face_restoration_model sd_model_name sd_model_hash sd_vae_name sd_vae_hash seed_resize_from_w "
    keys += "seed_resize_from_h denoising_strength extra_generation_params index_of_first_image infotexts "
    keys += "styles job_timestamp clip_skip is_using_inpainting_conditioning version"
    assert set(keys.split()) <= set(info) and info["is_using_inpainting_conditioning"] is False


def test_the_seed_fields_run_a1111s_own_path_with_its_gpu_noise(in_process):
    body = {
        "sampler_name": "Euler a",
        "subseed": 9,
        "subseed_strength": 0.3,
        "override_settings": {"eta_noise_seed_delta": 31337},
    }
    params = job_of(in_process, "txt2img", {**body, "seed_resize_from_w": 64, "seed_resize_from_h": 48})[0]
    assert (params["variation_seed"], params["variation_strength"], params["ensd"]) == (9, 0.3, 31337)
    assert params["seed_resize_from"] == (64, 48) and params["rng"] == "nv"  # A1111's default source: the GPU's numbers
    random_sub = job_of(in_process, "txt2img", {"subseed_strength": 0.3, **EULER})[0]["variation_seed"]
    assert 0 <= random_sub < 2**32  # subseed -1 (the default): a random one, as A1111 draws it
    assert "rng" not in job_of(in_process, "txt2img", {"subseed": 9, "seed_resize_from_w": 64})[0]  # neutral alone
    r = in_process.client.post("/sdapi/v1/txt2img", json={"prompt": "x", "subseed_strength": 1.5})
    assert r.status_code == 422 and "subseed_strength" in r.json()["error"]


@pytest.mark.parametrize(
    "route, body, words",
    [
        (
            "img2img",
            {**INPAINT, "subseed_strength": 0.3, "sampler_name": "DDPM"},
            "subseed_strength: A1111's seed fields run on A1111's own sampling path",
        ),
        (
            "txt2img",
            {"alwayson_scripts": {"controlnet": {"args": [UNIT]}}, "seed_resize_from_w": 64, "seed_resize_from_h": 64},
            "seed_resize_from_w: A1111's seed fields",
        ),  # fmt: skip
        (
            "txt2img",
            {**HR, "sampler_name": "DDPM", "override_settings": {"eta_noise_seed_delta": 5}},
            "eta_noise_seed_delta: A1111's",
        ),
        ("txt2img", {"subseed_strength": 0.3, "scheduler": "Karras"}, "a schedule type without"),  # loaded: checked
    ],
)
def test_seed_fields_that_a1111s_path_cannot_run_are_refused_before_the_queue(in_process, route, body, words):
    r, jobs = post(in_process, route, {**EULER, **body} if "scheduler" not in body else body)
    assert r.status_code == 400 and words in r.json()["error"] and not jobs, r.text


def test_the_a1111_path_is_asked_for_where_it_can_run(in_process):
    """The job carries A1111's noise source where A1111's path is to run it (the worker checks the
    model); not where the path cannot run the request, nor with --a1111-pixels off."""
    assert job_of(in_process, "txt2img", EULER)[-2] == "nv"
    assert job_of(in_process, "txt2img", {**EULER, "override_settings": {"randn_source": "CPU"}})[-2] == "cpu"
    assert job_of(in_process, "txt2img", {"sampler_name": "DDIM"})[-2] == "nv"  # all of A1111's samplers
    assert job_of(in_process, "txt2img", {"sampler_name": "DDPM"})[-2] is None
    assert job_of(in_process, "txt2img", {**EULER, **HR})[-2] == "nv"  # A1111's default hires upscaler, Latent
    assert job_of(in_process, "txt2img", {**EULER, **HR, **LANCZOS})[-2] == "nv"  # and its pixel upscalers
    assert job_of(in_process, "img2img", EULER)[-2] == "nv"
    assert job_of(in_process, "img2img", {**EULER, **INPAINT})[-2] == "nv"  # only masked (the API's default)
    in_process.server.cfg.a1111_pixels = "off"
    try:
        assert job_of(in_process, "txt2img", EULER)[-2] is None
        assert job_of(in_process, "txt2img", {**EULER, "override_settings": {"randn_source": "NV"}})[-2] == "nv"
    finally:
        in_process.server.cfg.a1111_pixels = "on"
