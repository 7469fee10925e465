"""The hires fix's upscaler models on the A1111 API by A1111's names (server/upscaler_models.py): the model
files of the models folder's ESRGAN/, RealESRGAN/, DAT/, ... listed by GET /sdapi/v1/upscalers as A1111
names them ("R-ESRGAN 4x+" for RealESRGAN_x4plus, any other by its stem), `hr_upscaler` resolved to the
file (confined to the folders; a pickle refused by name), the infotext writing A1111's name back. No real
model is read here (spandrel is optional): running one is tests/sampling/test_a1111_hires_pixels.py's."""

import os

import pytest
from inprocess import serve_in_process

pytest.importorskip("fastapi", reason="the server extra (latentdiff[serve]) is not installed")

from latentdiff.config.upscalers import model_label  # noqa: E402
from latentdiff.errors import UsageError  # noqa: E402
from latentdiff.server import upscaler_models  # noqa: E402
from latentdiff.server.a1111_params import Txt2ImgRequest, job_params  # noqa: E402
from latentdiff.server.a1111_routes import upscalers  # noqa: E402
from latentdiff.server.config import ServeConfig  # noqa: E402


@pytest.fixture
def cfg(tmp_path):
    models = tmp_path / "models"
    for path in ("ESRGAN/4x-UltraSharp.pth", "ESRGAN/sub/4x_foolhardy.safetensors", "RealESRGAN/RealESRGAN_x4plus.safetensors",
                 "RealESRGAN/RealESRGAN_x2plus.pth", "DAT/DAT_x3.safetensors", "ESRGAN/notes.txt"):  # fmt: skip
        (models / path).parent.mkdir(parents=True, exist_ok=True)
        (models / path).write_bytes(b"not read here")
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    os.symlink(tmp_path / "outside.safetensors", models / "ESRGAN" / "escape.safetensors")
    return ServeConfig(models_dir=str(models))


def test_the_upscalers_route_lists_them_by_a1111s_names(cfg):
    rows = {u["name"]: u for u in upscalers(cfg)}
    assert list(rows)[:3] == ["None", "Lanczos", "Nearest"]
    assert set(rows) - {"None", "Lanczos", "Nearest"} == {
        "4x-UltraSharp", "4x_foolhardy", "R-ESRGAN 4x+", "R-ESRGAN 2x+", "DAT x3"
    }  # fmt: skip
    assert rows["R-ESRGAN 4x+"]["scale"] == 4 and rows["R-ESRGAN 2x+"]["scale"] == 2 and rows["DAT x3"]["scale"] == 3
    assert rows["4x-UltraSharp"]["scale"] == 4 and rows["R-ESRGAN 4x+"]["model_name"] == "RealESRGAN"
    assert rows["R-ESRGAN 4x+"]["model_path"].endswith("RealESRGAN_x4plus.safetensors")


def test_hr_upscaler_names_resolve_to_the_file(cfg):
    find = lambda name: upscaler_models.resolve(cfg, name)  # noqa: E731
    body = Txt2ImgRequest(enable_hr=True, hr_upscaler="R-ESRGAN 4x+", width=32, height=32)
    assert job_params(body, find=find)["hires_upscaler"].endswith("RealESRGAN/RealESRGAN_x4plus.safetensors")
    assert find("DAT_x3.safetensors").endswith("DAT_x3.safetensors") and find("4x_foolhardy").endswith(
        "foolhardy.safetensors"
    )
    for name in ("escape", "../outside", "notes", "r-esrgan 4x+", "/etc/passwd.safetensors"):
        assert find(name) is None, name
    with pytest.raises(UsageError, match="upscaler models GET /sdapi/v1/upscalers lists"):
        job_params(Txt2ImgRequest(enable_hr=True, hr_upscaler="R-ESRGAN 8x"), find=find)
    with pytest.raises(UsageError, match="4x-UltraSharp.pth, a pickle file"):
        find("4x-UltraSharp")
    with pytest.raises(UsageError, match="is not available"):  # without the folder: as before
        job_params(Txt2ImgRequest(enable_hr=True, hr_upscaler="R-ESRGAN 4x+"))


def test_without_folders_nothing_is_listed(tmp_path):
    assert upscaler_models.listing(ServeConfig(models_dir=str(tmp_path))) == []


def test_the_infotext_names_a_model_file_as_a1111():
    assert model_label("/m/RealESRGAN/RealESRGAN_x4plus.safetensors") == "R-ESRGAN 4x+"
    assert model_label("C:\\m\\ESRGAN\\4x-UltraSharp.pth") == "4x-UltraSharp" and model_label("DAT_x2.pth") == "DAT x2"
    from latentdiff.images.infotext import _hires_fields

    fields = _hires_fields({"hires": 2.0, "steps": 4, "hires_upscaler": "/m/RealESRGAN_x4plus_anime_6B.safetensors"})
    assert fields["Hires upscaler"] == "R-ESRGAN 4x+ Anime6B"


_served_in_process = pytest.fixture(scope="module", name="in_process")(serve_in_process)


def test_the_api_lists_and_takes_them(in_process):
    """Through the app (inprocess.py keeps a RealESRGAN/RealESRGAN_x4plus.safetensors beside the model)."""
    names = [u["name"] for u in in_process.client.get("/sdapi/v1/upscalers").json()]
    assert names == ["None", "Lanczos", "Nearest", "R-ESRGAN 4x+"]
    assert [m["name"] for m in in_process.client.get("/sdapi/v1/realesrgan-models").json()] == ["R-ESRGAN 4x+"]
    body = {"prompt": "x", "steps": 2, "width": 16, "height": 16, "enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+"}
    r = in_process.client.post("/sdapi/v1/txt2img", json=body)
    (job,) = in_process.ran
    in_process.ran.clear()
    assert r.status_code == 200 and job.params["hires_upscaler"].endswith("RealESRGAN_x4plus.safetensors")
    r = in_process.client.post("/sdapi/v1/txt2img", json={**body, "hr_upscaler": "4x-Nope"})
    assert r.status_code == 400 and "4x-Nope" in r.json()["error"] and not in_process.ran
