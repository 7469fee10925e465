"""Fuzzing every route of the server (hypothesis, derandomized) inside a memory cap: whatever the
body, query or path, the answer is below 500 with a one-line JSON error when refused, and what
reaches the queue is within the server's bounds. The app runs in this process (inprocess.py) with
the tiny model loaded, so every check at submit runs; the worker only records the jobs.

Input families: field-aware bodies (each field of both APIs' schemas, plus the A1111 fields
latentdiff refuses or ignores, with values of every JSON type: bools for numbers, numbers at and past
their bounds, huge ints, strings, lists, objects, base64 pictures good and bad), arbitrary JSON
values, raw bodies (NaN and Infinity as numbers, numbers of many digits, deep nesting, bytes that
are not UTF-8, truncation, other content types), and query strings and path parameters. The heavy
run (many more examples) is marked slow."""

import base64
import io
import json
import os
import urllib.parse

import numpy as np
import pytest
from helpers import memory_cap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inprocess import serve_in_process
from PIL import Image

pytest.importorskip("fastapi", reason="the server extra (latentdiff[serve]) is not installed")

from latentdiff.server.a1111_controlnet import ALIASES, A1111Unit, DetectRequest  # noqa: E402
from latentdiff.server.a1111_fields import FIELDS, SETTINGS  # noqa: E402
from latentdiff.server.a1111_params import Img2ImgRequest  # noqa: E402
from latentdiff.server.schema import ControlUnit, GenerateRequest, ImagePromptUnit  # noqa: E402

_in_process = pytest.fixture(scope="module", name="in_process")(serve_in_process)
FUZZ = dict(
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
# examples per family and route: in the suite, and in the slow run (LATENTDIFF_FUZZ_HEAVY=N for a longer hunt)
FAST, HEAVY = 40, int(os.environ.get("LATENTDIFF_FUZZ_HEAVY", 300))
CAP = 2 * 2**30  # the app may allocate this much more while fuzzed: a blow-up is a MemoryError, a 500


def _npy(array) -> str:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=array.dtype == object)
    return base64.b64encode(buf.getvalue()).decode()


def _b64(im: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


PICTURES = [
    _b64(Image.new("RGB", (32, 32), (200, 30, 30))),
    _b64(Image.new("RGBA", (48, 24), (0, 0, 0, 0))),
    _b64(Image.new("L", (32, 32), 255)),
    "data:image/png;base64," + _b64(Image.new("RGB", (40, 40), "blue")),
    _b64(Image.new("RGB", (64, 16), "green"), "JPEG"),
    base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode(),  # a broken PNG
    "not base64 at all!",
    "",
]
BOUNDS = [-(2**63), -(2**31), -5, -1, 0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 64, 100, 256, 500, 501, 1000]
BOUNDS += [2047, 2048, 2049, 4096, 10**6, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**30]
FLOATS = [-1.0, -0.0, 0.0, 1e-300, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 7.5, 8.0, 8.5, 100.0, 100.5, 1e300]
TEXT = ["x", "cat face", "", "   ", "\0", "crop", "fit", "masked", "full", "euler", "euler_a", "Euler a", "karras"]
TEXT += ["tiny", "../x", "\udc80", "é" * 300, "<lora:x:1>", "Latent", "Lanczos", "None"]

scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(BOUNDS),
    st.integers(-(10**40), 10**40),
    st.sampled_from(FLOATS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(TEXT),
    st.text(max_size=20),
)
json_value = st.recursive(
    scalar,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
field_value = st.one_of(
    scalar,
    st.sampled_from(BOUNDS[3:12] + FLOATS[3:10] + [True, False, None]),  # near the valid values: gets queued
    st.sampled_from(PICTURES),
    st.lists(st.sampled_from(PICTURES), min_size=0, max_size=2),
    st.lists(st.sampled_from(BOUNDS) | st.sampled_from(FLOATS) | st.booleans(), min_size=3, max_size=5),
    json_value,
)
V1_FIELDS = sorted(GenerateRequest.model_fields)
A1111_FIELDS = sorted(FIELDS)
OVERRIDES = st.dictionaries(st.sampled_from([*SETTINGS, "x"]), field_value, max_size=3)


def body_for(fields: list[str], base: dict):
    """A plausible request with some fields set to anything, some removed, and sometimes one extra."""
    chosen = st.dictionaries(st.sampled_from(fields), field_value, max_size=3)
    extra = st.dictionaries(st.text(min_size=1, max_size=10), json_value, max_size=1)
    dropped = st.sets(st.sampled_from(sorted(base)), max_size=1)
    return st.tuples(chosen, extra, dropped, st.sampled_from([False] * 4 + [True])).map(
        lambda t: {**{k: v for k, v in base.items() if k not in t[2]}, **t[0], **(t[1] if t[3] else {})}
    )


SMALL = {"prompt": "x", "steps": 2, "width": 32, "height": 32, "seed": 1}
IMAGE_FIELDS = ["init_image", "mask", "strength", "resize", "mask_blur", "inpaint_area", "padding", "outpaint"]
A1111_IMAGE_FIELDS = ["init_images", "mask", "denoising_strength", "resize_mode", "mask_blur", "inpaint_full_res"]
A1111_IMAGE_FIELDS += ["inpaint_full_res_padding", "inpainting_mask_invert", "inpainting_fill", "mask_blur_x"]
HR_FIELDS = ["hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "denoising_strength"]
HR_FIELDS += sorted(k for k, f in FIELDS.items() if f.hires)
# Control units: a plausible unit (the in-process server's control model, a picture) with fields
# set to anything; A1111's as webuiapi's ControlNetUnit sends them, in alwayson_scripts.
UNIT = {"image": PICTURES[0], "model": "cn-fake", "module": "canny"}
A1111_UNIT = {"enabled": True, "image": PICTURES[0], "model": "cn-fake [e3b0c442]", "module": "canny"}
A1111_UNIT.update(resize_mode="Resize and Fill", processor_res=512, threshold_a=64, threshold_b=64)
TEXT += ["cn-fake", "cn-fake [e3b0c442]", "canny", "none", "invert", "Balanced", "Just Resize", "Both"]
field_value = field_value | st.sampled_from(TEXT[-8:])
# IP-Adapter image prompts (the in-process server's adapter; FaceID embeddings as a .npy, good and pickled).
PROMPT = {"image": PICTURES[0], "adapter": "ip-fake", "scale": 0.5}
A1111_IP_UNIT = {"image": PICTURES[0], "model": "ip-fake [e3b0c442]", "module": "ip-adapter_clip_sd15", "weight": 0.7}
TEXT += ["ip-fake", "ip-fake [e3b0c442]", "ip-adapter_clip_sd15", "ip-adapter_face_id", _npy(np.zeros(512, "f4"))]
TEXT += [_npy(np.array([{}], dtype=object))]
field_value = field_value | st.sampled_from(TEXT[-6:])
units = st.lists(body_for(sorted(ControlUnit.model_fields), UNIT), max_size=2)
image_prompts = st.lists(body_for(sorted(ImagePromptUnit.model_fields), PROMPT), max_size=3)
a1111_fields = sorted({*A1111Unit.model_fields, *ALIASES})
a1111_units = st.lists(
    body_for(a1111_fields, A1111_UNIT) | body_for(a1111_fields, A1111_IP_UNIT) | json_value, max_size=2
)
scripts = st.builds(
    lambda key, args, wrap: {key: {"args": args} if wrap else args},
    st.sampled_from(["controlnet", "ControlNet", "CONTROLNET"]),
    a1111_units,
    st.sampled_from([True, True, True, False]),
)
# A1111 parameters texts (the infotext field): ours, with fields refused, numbers of every kind, broken ones
INFOTEXTS = ["x\nSteps: 2, Sampler: Euler, CFG scale: 3, Seed: 1, Size: 32x32", "x\nSteps: 2, Seed: 1, Size: 32"]
INFOTEXTS += ["x\nNegative prompt: y\nSteps: nan, Sampler: Warp, Seed: 1e400, Clip skip: 99, ENSD: 31337"]
INFOTEXTS += ["x\nSteps: 2, Seed: 1, Variation seed strength: 0.3, Hires upscale: 2, Denoising strength: 0.5"]
INFOTEXTS += ['x\nSteps: 2, Seed: 1, Eta: 0.5, Sigma churn: 1, VAE: "a, b", Schedule type: Karras', "", ":" * 50]
field_value = field_value | st.sampled_from(INFOTEXTS)
# The add-on folders' names (inprocess.py: styles.csv and vae/ beside the model), A1111's noise sources, ours
TEXT += ["cinematic", "sharp", "other.safetensors", "Automatic", "GPU", "CPU", "NV", "nv", "comfy", "per_image"]
TEXT += ["plain", "a1111", "Exponential", "x <lora:foo:0.5>", "vary_coeff", "logSNR", "R-ESRGAN 4x+", "both passes"]
field_value = field_value | st.sampled_from(TEXT[-18:]) | st.lists(st.sampled_from(TEXT[-18:]), max_size=3)
NOISE_FIELDS = ["rng", "variation_seed", "variation_strength", "noise", "prompt_syntax", "schedule_type", "eta"]
NOISE_FIELDS += ["s_noise", "scheduler", "seed"]
A1111_NOISE = ["styles", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h", "enable_hr"]
A1111_NOISE += ["override_settings", "sampler_name", "scheduler", "refiner_checkpoint"]
ROUTE_BODIES = {
    "/v1/generate": body_for(V1_FIELDS, SMALL),
    "/sdapi/v1/txt2img": body_for(A1111_FIELDS, SMALL),
    "/sdapi/v1/img2img": body_for(A1111_FIELDS, {**SMALL, "init_images": [PICTURES[0]]}),
    "/v1/generate (pictures)": body_for(IMAGE_FIELDS, {**SMALL, "init_image": PICTURES[0]}),
    "/sdapi/v1/img2img (pictures)": body_for(A1111_IMAGE_FIELDS, {**SMALL, "init_images": [PICTURES[0]]}),
    "/sdapi/v1/txt2img (hires)": body_for(HR_FIELDS, {**SMALL, "enable_hr": True}),
    "/v1/generate (controls)": body_for(["controls", "control_mode", "width", "height"], SMALL).flatmap(
        lambda b: units.map(lambda u: {**b, "controls": u} if "controls" not in b else b)
    ),
    "/v1/generate (image prompts)": body_for(["image_prompts", "controls", "width"], SMALL).flatmap(
        lambda b: image_prompts.map(lambda u: {**b, "image_prompts": u} if "image_prompts" not in b else b)
    ),
    "/sdapi/v1/txt2img (controlnet)": body_for(["alwayson_scripts", "width", "enable_hr"], SMALL).flatmap(
        lambda b: scripts.map(lambda s: {**b, "alwayson_scripts": s} if "alwayson_scripts" not in b else b)
    ),
    "/sdapi/v1/img2img (controlnet)": body_for(["alwayson_scripts", "mask", "inpaint_full_res"], SMALL).flatmap(
        lambda b: scripts.map(lambda s: {**b, "init_images": [PICTURES[0]], "alwayson_scripts": s})
    ),
    "/controlnet/detect": body_for(sorted(DetectRequest.model_fields), {"controlnet_input_images": [PICTURES[0]]}),
    "/sdapi/v1/png-info": body_for(["image"], {"image": PICTURES[0]}),
    "/sdapi/v1/txt2img (infotext)": body_for(A1111_FIELDS, SMALL).flatmap(
        lambda b: st.sampled_from(INFOTEXTS).map(lambda t: {**b, "infotext": t})
    ),
    "/v1/generate (A1111 noise)": body_for(NOISE_FIELDS, {**SMALL, "scheduler": "euler_a"}),
    "/sdapi/v1/txt2img (styles, seeds)": body_for(A1111_NOISE, {**SMALL, "sampler_name": "Euler a"}),
    # the guidance fields of the transformer families (Flux.1 dev's true CFG and Forge's distilled CFG, Z-Image's)
    "/v1/generate (guidance)": body_for(["true_cfg", "cfg_normalization", "cfg_truncation", "guidance"], SMALL),
    "/sdapi/v1/txt2img (Forge)": body_for(["distilled_cfg_scale", "cfg_scale", "sampler_name", "scheduler"], SMALL),
    "/sdapi/v1/options": st.dictionaries(st.sampled_from([*SETTINGS, "x"]), field_value, max_size=3),
}
# narrow variations of the field families above (their fields are drawn there too): the fast run only
FAST_ONLY = {"/v1/generate (A1111 noise)", "/sdapi/v1/txt2img (styles, seeds)", "/v1/generate (guidance)"}
FAST_ONLY |= {"/sdapi/v1/txt2img (Forge)"}


NUMBER_FIELDS = {
    name
    for model in (GenerateRequest, Img2ImgRequest)
    for name, f in model.model_json_schema()["properties"].items()
    if {"integer", "number"} & {f.get("type"), *(t.get("type") for t in f.get("anyOf", ()))}
}


ROUTES = sorted(r for r in ROUTE_BODIES if " " not in r)


def check_answer(in_process, r, body=None) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code < 300 and isinstance(body, dict):  # accepted: every number sent was a number
        for name in NUMBER_FIELDS & set(body):
            assert body[name] is None or not isinstance(body[name], (bool, str, list, dict)), (name, body[name])
        for name in ("batch_size", "n_iter"):
            assert r.request.url.path.startswith("/v1") or body.get(name, 1) >= 1, (name, body[name])
    if r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error, str) and error and "\n" not in error, r.text[:500]
        assert len(error) < 2000, error[:200]
    for job in in_process.ran:  # what reached the queue is within the server's bounds
        p = job.params
        assert 1 <= p["num_images"] <= 16 and (p["steps"] is None or 1 <= p["steps"] <= 500), p
        assert len(p.get("controls", ())) <= 8, p
        for u in p.get("controls", ()):  # as the job shows its units (its pictures are let go once it ran)
            assert 0 <= u["weight"] <= 2 and 0 <= u["start"] < u["end"] <= 1 and 64 <= u["processor_res"] <= 2048, u
            assert u["model"] == "cn-fake [e3b0c442]" and u["resize"] in ("crop", "fit", "stretch"), u
        assert len(p.get("image_prompts", ())) <= 8, p
        for u in p.get("image_prompts", ()):
            assert 0 <= u["scale"] <= 2 and u["adapter"] == "ip-fake [e3b0c442]", u
        assert all(p[s] is None or 8 <= p[s] <= 2048 for s in ("width", "height")), p
        assert p["guidance"] is None or 0 <= p["guidance"] <= 100, p
        assert p.get("distilled_cfg_scale") is None or 0 <= p["distilled_cfg_scale"] <= 100, p
        assert 1 <= p.get("true_cfg", 1) <= 100 and 0 <= p.get("cfg_truncation", 1) <= 1, p
        assert 0 <= p.get("cfg_normalization", 0) <= 100, p
    in_process.ran.clear()


def post(in_process, route: str, raw: bytes, content_type: str = "application/json", body=None):
    with memory_cap(CAP):
        r = in_process.post(route, raw, content_type)
    check_answer(in_process, r, body)
    return r


# ---- field-aware bodies ----------------------------------------------------------------------
def _fields(in_process, data, route):
    body = data.draw(ROUTE_BODIES[route], label="body")
    if route.startswith("/sdapi") and data.draw(st.booleans(), label="overrides"):
        body["override_settings"] = data.draw(OVERRIDES, label="override_settings")
    post(in_process, route.partition(" ")[0], json.dumps(body).encode(), body=body)


@pytest.mark.parametrize("route", sorted(ROUTE_BODIES))
@settings(max_examples=FAST, **FUZZ)
@given(data=st.data())
def test_fuzz_fields(in_process, route, data):
    _fields(in_process, data, route)


@pytest.mark.slow
@pytest.mark.parametrize("route", sorted(set(ROUTE_BODIES) - FAST_ONLY))
@settings(max_examples=HEAVY, **FUZZ)
@given(data=st.data())
def test_fuzz_fields_heavy(in_process, route, data):
    _fields(in_process, data, route)


# ---- raw bodies ------------------------------------------------------------------------------
def encode(value, data) -> str:
    """JSON text of `value` as a hostile client may write it: NaN and Infinity, long numbers."""
    if isinstance(value, float) and data.draw(st.integers(0, 9)) == 0:
        return data.draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" * 5000]))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {encode(v, data)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(encode(v, data) for v in value) + "]"
    return json.dumps(value)


def _raw(in_process, data, route):
    body = data.draw(ROUTE_BODIES[route] | json_value, label="value")
    text = encode(body, data)
    depth = data.draw(st.sampled_from([0, 0, 0, 1, 31, 33, 1000, 100_000]), label="nesting")
    if depth and isinstance(body, dict) and body:
        key = next(iter(body))
        text = text.replace(f"{json.dumps(key)}: ", f"{json.dumps(key)}: " + "[" * depth, 1)[:-1] + "]" * depth + "}"
    raw = text.encode("utf-8", "surrogatepass")
    cut = data.draw(st.sampled_from([None, None, None, 0, 1, len(raw) // 2, len(raw) - 1]), label="cut")
    raw = raw if cut is None else raw[:cut]
    if data.draw(st.booleans(), label="bad bytes"):
        at = data.draw(st.integers(0, len(raw)), label="at")
        raw = raw[:at] + data.draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\0", b"\xfe\xff"])) + raw[at:]
    ctype = data.draw(
        st.sampled_from(["application/json", "application/json", "text/plain", "", "application/x-www-form-urlencoded"])
    )
    post(in_process, route.partition(" ")[0], raw, ctype)


@pytest.mark.parametrize("route", ROUTES)
@settings(max_examples=FAST, **FUZZ)
@given(data=st.data())
def test_fuzz_raw_bodies(in_process, route, data):
    _raw(in_process, data, route)


@pytest.mark.slow
@pytest.mark.parametrize("route", ROUTES)
@settings(max_examples=HEAVY, **FUZZ)
@given(data=st.data())
def test_fuzz_raw_bodies_heavy(in_process, route, data):
    _raw(in_process, data, route)


# ---- queries and paths -----------------------------------------------------------------------
GETS = [
    "/v1/jobs/{}",
    "/v1/jobs/{}/events",
    "/v1/images/{}",
    "/v1/images?limit={}",
    "/sdapi/v1/progress?skip_current_image={}",
    "/sdapi/v1/schedulers?{}",
    "/sdapi/v1/memory?{}",
    "/sdapi/v1/cmd-flags?{}",
    "/sdapi/v1/skip?{}",
    "/sdapi/v1/refresh-checkpoints?{}",
    "/sdapi/v1/loras?{}",
    "/v1/health?{}",
]
odd = st.one_of(st.text(max_size=30), st.sampled_from([str(2**70), "-1", "nan", "true", "..", "%00", "a" * 5000]))


@settings(max_examples=FAST * 2, **FUZZ)
@given(path=st.sampled_from(GETS), value=odd, method=st.sampled_from(["GET", "DELETE", "POST"]))
def test_fuzz_paths_and_queries(in_process, path, value, method):
    if path.endswith("/events") and method == "GET":
        method = "DELETE"  # a stream would wait for a job that exists; its id is what is fuzzed
    url = path.format(urllib.parse.quote(value, safe=""))
    with memory_cap(CAP):
        r = in_process.client.request(method, url)
    assert r.status_code < 500, (url, r.status_code, r.text[:300])
    assert r.status_code < 400 or isinstance(r.json()["error"], str)


def test_fuzz_fixed_hostile_numbers(in_process):
    """The JSON numbers a fuzzer finds by chance, every one on every number field of /v1: refused
    (4xx), or for the odd but valid ones (-0, tiny fractions) anything below 500."""
    refused = ["true", "false", "NaN", "-Infinity", "1e400", "1" * 41, '"1"', "[]", "{}", "[[[[1]]]]"]
    for field in ["steps", "guidance", "width", "height", "seed", "num_images", "strength", "mask_blur", "padding"]:
        for n in refused + ["-0", "0.0000001", "1e-400"]:
            r = post(in_process, "/v1/generate", f'{{"prompt": "x", "{field}": {n}}}'.encode())
            assert n not in refused or 400 <= r.status_code < 500, (field, n, r.status_code)


def test_control_bases_are_accepted(in_process):
    """The bodies the control families start from reach the queue (so the fuzzing explores near
    valid units, not only refusals)."""
    in_process.server.a1111_settings.clear()  # what the fuzzing of /options left (ENSD refuses ControlNet units)
    r = post(in_process, "/v1/generate", json.dumps({**SMALL, "controls": [UNIT]}).encode())
    assert r.status_code == 202, r.text
    body = {**SMALL, "alwayson_scripts": {"ControlNet": {"args": [A1111_UNIT]}}}
    r = post(in_process, "/sdapi/v1/txt2img", json.dumps(body).encode())
    assert r.status_code == 200 and json.loads(r.json()["info"])["interrupted"] is False, r.text
    r = post(in_process, "/controlnet/detect", json.dumps({"controlnet_images": [PICTURES[0]]}).encode())
    assert r.status_code == 200 and len(r.json()["images"]) == 1, r.text
    r = post(in_process, "/v1/generate", json.dumps({**SMALL, "image_prompts": [PROMPT]}).encode())
    assert r.status_code == 202, r.text
    faces = {**PROMPT, "image": _npy(np.zeros((2, 512), "f4"))}
    r = post(in_process, "/v1/generate", json.dumps({**SMALL, "image_prompts": [faces]}).encode())
    assert r.status_code == 202, r.text
    body = {**SMALL, "alwayson_scripts": {"controlnet": {"args": [A1111_IP_UNIT, A1111_UNIT]}}}
    r = post(in_process, "/sdapi/v1/txt2img", json.dumps(body).encode())
    assert r.status_code == 200, r.text
    assert in_process.server.adapter_models.encoders(in_process.server.adapter_models.root / "ip-fake.safetensors")


V1_NEW = {  # /v1/generate's A1111/ComfyUI fields: each reaches the job as the pipeline's keyword
    "noise": ("comfy", "noise", "comfy"),
    "prompt_syntax": ("plain", "prompt_syntax", "plain"),
    "rng": ("nv", "rng", "nv"),
    "variation_seed": (5, "variation_seed", 5),
    "variation_strength": (0.5, "variation_strength", 0.5),
    "schedule_type": ("Karras", "schedule", "Karras"),
    "eta": (0.5, "eta", 0.5),
    "s_noise": (0.9, "s_noise", 0.9),
}


@pytest.mark.parametrize("field", sorted(V1_NEW))
def test_v1_noise_and_syntax_fields_reach_the_job_or_are_refused(in_process, field):
    value, key, shown = V1_NEW[field]
    base = {**SMALL, "scheduler": {"eta": "ddim", "s_noise": "euler", "schedule_type": "euler"}.get(field, "euler_a")}
    r = post(in_process, "/v1/generate", json.dumps({**base, field: value}).encode())
    assert r.status_code == 202, r.text
    assert r.json()["params"][key] == shown
    bad = {"noise": "gpu", "prompt_syntax": "latex", "rng": "tpu", "variation_seed": -1, "variation_strength": 2}
    bad.update(schedule_type="x" * 101, eta=5, s_noise=-1)
    r = post(in_process, "/v1/generate", json.dumps({**base, field: bad[field]}).encode())
    assert 400 <= r.status_code < 500 and field in r.json()["error"], r.text
    r = post(in_process, "/v1/generate", json.dumps({**base, "noise_seed": 1}).encode())
    assert r.status_code == 422 and "noise_seed" in r.json()["error"]  # unknown fields stay refused


def test_a1111_noise_bases_are_accepted(in_process):
    in_process.server.a1111_settings.clear()  # what the fuzzing of /options left
    body = {**SMALL, "scheduler": "euler_a", "rng": "nv", "variation_seed": 3, "variation_strength": 0.5}
    assert post(in_process, "/v1/generate", json.dumps(body).encode()).status_code == 202
    body = {**SMALL, "sampler_name": "Euler a", "styles": ["cinematic"], "subseed_strength": 0.3}
    r = post(in_process, "/sdapi/v1/txt2img", json.dumps(body).encode())
    assert r.status_code == 200, r.text
    for bad in ("x" * 100_000, [1], {"a": 1}):  # styles is a list of names
        r = post(in_process, "/sdapi/v1/txt2img", json.dumps({**SMALL, "styles": bad}).encode())
        assert 400 <= r.status_code < 500 and "styles" in r.json()["error"] and len(r.json()["error"]) < 400
