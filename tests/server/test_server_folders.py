"""The server's add-on folders (server/folders.py) and A1111's own pixels on the A1111 API
(server/a1111_pixels.py), end to end in this process on the tiny model: the routes list the real
files, a `<lora:>` tag, `sd_vae` and `styles` change the pixels as the Python API's equivalents do,
A1111 txt2img requests run A1111's own path (its GPU noise, NV) unless the path cannot run them or
the server turns it off, and what cannot be honoured is a 400 naming it before anything is queued."""

import base64
import io
import json
import shutil

import numpy as np
import pytest
import torch
from helpers import kohya_file
from PIL import Image
from safetensors.torch import save_file

pytest.importorskip("fastapi", reason="the server extra (latentdiff[serve]) is not installed")

BODY = dict(prompt="red apple", seed=7, steps=2, width=32, height=32, cfg_scale=3.0, sampler_name="Euler a")
KW = dict(seed=7, steps=2, width=32, height=32, guidance=3.0)
STYLES = 'name,prompt,negative_prompt\nfilm,"film still of {prompt}",blurry\nsharp,sharp,\n'


@pytest.fixture(scope="module")
def pipe(tiny_sd1):
    from latentdiff import Pipeline

    p = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp32")
    p.progress = False
    return p


@pytest.fixture(scope="module")
def folders(tiny_sd1, pipe, tmp_path_factory):
    """A models folder in A1111's layout: lora/, vae/ (a VAE with its decoder shifted), embeddings/, styles.csv."""
    root = tmp_path_factory.mktemp("serve-folders")
    models = root / "models"
    (models / "lora").mkdir(parents=True)
    kohya_file(models / "lora" / "style.safetensors")
    (models / "vae").mkdir()
    # the pipeline's fp32 VAE on the CPU is channels_last; safetensors writes contiguous tensors only
    vae = {k: v.clone(memory_format=torch.contiguous_format) for k, v in pipe.components.vae.state_dict().items()}
    vae["decoder.conv_out.bias"] += 0.5
    save_file(vae, models / "vae" / "bright.safetensors")
    (models / "embeddings").mkdir()
    save_file(
        {"emb_params": torch.randn(2, 32, generator=torch.Generator().manual_seed(0))},
        models / "embeddings" / "shiny.safetensors",
    )
    (models / "styles.csv").write_text(STYLES)
    shutil.copytree(tiny_sd1, models / "base")
    return root, models


@pytest.fixture(scope="module")
def client(folders):
    from fastapi.testclient import TestClient

    from latentdiff.server.app import Server, create_app
    from latentdiff.server.config import ServeConfig

    root, models = folders
    server = Server(ServeConfig(out=str(root / "out"), model=str(models / "base"), models_dir=str(models)))
    try:
        with TestClient(create_app(server)) as c:
            c.server = server
            yield c
    finally:
        server.queue.stop(timeout=30)


def txt2img(client, **changes) -> tuple[np.ndarray, dict]:
    r = client.post("/sdapi/v1/txt2img", json={**BODY, **changes})
    assert r.status_code == 200, r.text
    image = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    return np.asarray(image.convert("RGB"), dtype=np.int16), json.loads(r.json()["info"])


def refused(client, words: str, path="/sdapi/v1/txt2img", **changes) -> None:
    before = len(client.server.queue.jobs())
    r = client.post(path, json={**BODY, **changes})
    assert r.status_code == 400 and words in r.json()["error"], r.text
    assert len(client.server.queue.jobs()) == before  # refused before anything was queued


def px(images) -> np.ndarray:
    return np.asarray(images[0].convert("RGB"), dtype=np.int16)


def test_the_routes_list_the_folders_files(client, folders):
    _, models = folders
    get = lambda path: client.get(f"/sdapi/v1/{path}").json()  # noqa: E731
    assert [(x["name"], x["path"]) for x in get("loras")] == [("style", str(models / "lora" / "style.safetensors"))]
    assert get("sd-vae") == [
        {"model_name": "bright.safetensors", "filename": str(models / "vae" / "bright.safetensors")}
    ]
    assert list(get("embeddings")["loaded"]) == ["shiny"]
    assert get("prompt-styles")[0] == {"name": "film", "prompt": "film still of {prompt}", "negative_prompt": "blurry"}
    flags = get("cmd-flags")
    assert (flags["lora_dir"], flags["vae_dir"]) == (str(models / "lora"), str(models / "vae"))
    for refresh in ("refresh-loras", "refresh-vae", "refresh-embeddings", "refresh-checkpoints"):
        assert client.post(f"/sdapi/v1/{refresh}").status_code == 200
    assert [m["name"] for m in client.get("/v1/models").json()["models"]] == [
        "base"
    ]  # the add-on folders are no models


def test_a1111_txt2img_gives_a1111s_own_pixels(client, pipe):
    """A1111's path with its default GPU noise (NV), as the Python API's rng="nv"; its randn_source
    setting names the source; --a1111-pixels off keeps diffusers' path."""
    got, info = txt2img(client)
    assert info["sampling_path"] == "A1111" and "RNG: NV" in info["infotexts"][0]
    assert np.array_equal(got, px(pipe("red apple", scheduler="euler_a", rng="nv", **KW)))
    cpu, info = txt2img(client, override_settings={"randn_source": "CPU"})
    assert "RNG: CPU" in info["infotexts"][0] and np.array_equal(
        cpu, px(pipe("red apple", scheduler="euler_a", rng="cpu", **KW))
    )
    client.server.cfg.a1111_pixels = "off"
    try:
        off, info = txt2img(client)
    finally:
        client.server.cfg.a1111_pixels = "on"
    assert info["sampling_path"] == "diffusers" and "--a1111-pixels off" in info["sampling_path_note"]
    assert np.array_equal(off, px(pipe("red apple", scheduler="euler_a", **KW))) and not np.array_equal(off, got)


def test_what_a1111s_path_cannot_run_stays_on_diffusers_or_is_refused(client):
    _, info = txt2img(client, sampler_name="DDIM")  # all 20 of A1111's samplers run there
    assert info["sampling_path"] == "A1111"
    _, info = txt2img(client, sampler_name="DDPM")  # not one of A1111's
    assert info["sampling_path"] == "diffusers" and "DDPM" in info["sampling_path_note"]
    _, info = txt2img(client, enable_hr=True, hr_scale=1.5, denoising_strength=0.5)  # A1111's Latent upscaler
    assert info["sampling_path"] == "A1111"
    for pixel in ("Lanczos", "Nearest", "None"):  # and its pixel upscalers
        _, info = txt2img(client, enable_hr=True, hr_scale=1.5, denoising_strength=0.5, hr_upscaler=pixel)
        assert info["sampling_path"] == "A1111", pixel
    refused(client, "subseed_strength: A1111's seed fields", subseed_strength=0.5, sampler_name="DDPM")
    refused(
        client,
        "seed_resize_from_w: A1111's seed fields",
        seed_resize_from_w=64,
        seed_resize_from_h=64,
        sampler_name="DDPM",
    )
    # A1111's path runs a refiner with the hires fix now: ENSD is not refused (this "refiner" is no SDXL one)
    hr = dict(enable_hr=True, hr_scale=1.5, refiner_checkpoint="base", refiner_switch_at=0.5)
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "override_settings": {"eta_noise_seed_delta": 5}, **hr})
    assert r.status_code == 400 and "the refiner must be an SDXL model" in r.json()["error"], r.text
    refused(client, "randn_source='TPU'", override_settings={"randn_source": "TPU"})


def b64(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_a1111_inpainting_runs_a1111s_path(client, pipe):
    """img2img with a mask, "whole picture" and masked content "original": A1111's path, the Python
    API's pixels with rng "nv"; so does "only masked" (A1111's API defaults: padding 0, masked content fill)."""
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    body = {**BODY, "init_images": [b64(image)], "mask": b64(mask), "denoising_strength": 0.75, "mask_blur": 2}
    r = client.post("/sdapi/v1/img2img", json={**body, "inpaint_full_res": False, "inpainting_fill": 1})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["sampling_path"] == "A1111"
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB"), dtype=np.int16)
    want = pipe("red apple", scheduler="euler_a", rng="nv", image=image, mask=mask, mask_blur=2, strength=0.75, **KW)
    assert np.array_equal(got, px(want))
    r = client.post("/sdapi/v1/img2img", json=body)
    assert json.loads(r.json()["info"])["sampling_path"] == "A1111"
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB"), dtype=np.int16)
    want = pipe("red apple", scheduler="euler_a", rng="nv", image=image, mask=mask, mask_blur=2, strength=0.75,
                inpaint_area="masked", padding=0, masked_content="fill", **KW)  # fmt: skip
    assert np.array_equal(got, px(want))


def test_lora_tags_come_from_the_lora_folder(client, pipe, folders):
    _, models = folders
    tagged, _ = txt2img(client, prompt="red apple <lora:style:0.7>", sampler_name="Euler")
    lora_dir_pipe = pipe  # the same weights: a tag merges for the call and restores them
    lora_dir_pipe.lora_dir = models / "lora"
    try:
        want = px(lora_dir_pipe("red apple <lora:style:0.7>", scheduler="euler", rng="nv", **KW))
    finally:
        lora_dir_pipe.lora_dir = None
    assert np.array_equal(tagged, want) and not np.array_equal(tagged, txt2img(client, sampler_name="Euler")[0])
    refused(client, "<lora:nope:1>: no LoRA file nope", prompt="x <lora:nope:1>")
    r = client.post("/v1/generate", json={"prompt": "x <lora:nope:1>", "steps": 2, "width": 32, "height": 32})
    assert r.status_code == 400 and "<lora:nope:1>" in r.json()["error"]


def test_sd_vae_and_styles(client, pipe):
    plain, _ = txt2img(client)
    bright, info = txt2img(client, override_settings={"sd_vae": "bright.safetensors"})
    assert (bright - plain).mean() > 10 and info["sd_vae_name"] == "bright"
    assert np.array_equal(txt2img(client, override_settings={"sd_vae": "Automatic"})[0], plain)  # the VAE is let go
    refused(client, "sd_vae='nope' is not a VAE of this server", override_settings={"sd_vae": "nope"})
    styled, info = txt2img(client, prompt="apple", styles=["film", "sharp"])
    assert info["styles"] == ["film", "sharp"] and info["prompt"] == "apple"
    assert info["all_prompts"] == ["film still of apple, sharp"] and info["all_negative_prompts"] == ["blurry"]
    refused(client, "styles: unknown style 'nope'", styles=["nope"])


def test_embeddings_of_the_folder_apply_and_a_new_file_joins(client, pipe, folders):
    """The folder's embeddings are added to the model before a job; one put there later joins at
    the next job (A1111's refresh), with no reload."""
    _, models = folders
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "prompt": "red apple shiny"})
    record = json.loads(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).info["latentdiff"])
    assert [e["token"] for e in record["embeddings"]] == ["shiny"]
    before, _ = txt2img(client, prompt="red apple fresh")
    fresh = models / "embeddings" / "fresh.safetensors"
    save_file({"emb_params": torch.randn(1, 32, generator=torch.Generator().manual_seed(1)) * 5}, fresh)
    try:
        assert client.post("/sdapi/v1/refresh-embeddings").status_code == 200
        assert list(client.get("/sdapi/v1/embeddings").json()["loaded"]) == ["fresh", "shiny"]
        after, _ = txt2img(client, prompt="red apple fresh")
    finally:
        fresh.unlink()
    assert not np.array_equal(after, before)
    assert np.array_equal(
        txt2img(client, prompt="red apple")[0], px(pipe("red apple", scheduler="euler_a", rng="nv", **KW))
    )
