"""`generate --image-prompt IMG[:SCALE] --ip-adapter FILE [--image-encoder DIR]`: in-process on the
tiny models, equal to the Python API (with --control too); each image prompt recorded in the PNG
and as an A1111 IP-Adapter unit after the ControlNet units, replayed by --from; A1111's ip-adapter
units read as image prompts; bad flags one line, exit 2, before the model loads."""

import shutil

import numpy as np
import pytest
from helpers import noise_image, pixels, tiny_controlnet
from helpers import png_texts as texts
from ip_adapter_files import FACE_DIM, h94_layout
from PIL import Image, PngImagePlugin

from latentdiff import Control, ImagePrompt
from latentdiff.config.image_prompt_flags import split_prompt
from latentdiff.errors import UsageError
from latentdiff.images.infotext import parse_infotext
from latentdiff.pipeline import Pipeline


@pytest.fixture(scope="module")
def files(pipe_sd1, tmp_path_factory):
    root = tmp_path_factory.mktemp("ipcli")
    models = h94_layout(root / "IP:Adapter", pipe_sd1.components.unet)  # a ':' in the adapter's path
    cn = root / "cn"
    tiny_controlnet(pipe_sd1.components.unet, pipe_sd1.scale_factor, 1).save_pretrained(cn)
    picture = root / "style:1.png"  # a ':' in the picture's name
    noise_image((48, 40), seed=5).save(picture)
    face = root / "face.npy"
    np.save(face, np.random.default_rng(3).standard_normal(FACE_DIM).astype(np.float32))
    return root, models, cn, picture, face


ADAPTERS = {"base": "ip-adapter_sd15", "plus": "ip-adapter-plus_sd15", "faceid": "ip-adapter-faceid_sd15"}


@pytest.mark.parametrize("kind", ["base", "plus", "faceid"])
def test_generate_image_prompt_equals_the_python_api(generate, tiny_sd1, pipe_sd1, files, tmp_path, kind):
    root, models, cn, picture, face = files
    image = face if kind == "faceid" else picture
    adapter = models / f"{ADAPTERS[kind]}.safetensors"
    flags = ["--image-prompt", f"{image}:0.7", "--ip-adapter", adapter]
    controls = [Control(picture, cn, 0.8)] if kind == "plus" else None
    flags += ["--control", f"{picture}:{cn}:0.8"] if controls else []
    code, out, err = generate(tiny_sd1, tmp_path, *flags)
    assert code == 0, err
    prompts = [ImagePrompt(image, 0.7)]
    api = pipe_sd1("a red apple", steps=2, seed=3, image_prompts=prompts, ip_adapter=adapter, controls=controls)[0]
    plain = pipe_sd1("a red apple", steps=2, seed=3, controls=controls)[0]
    assert np.array_equal(pixels(out.strip()), np.asarray(api))
    assert np.abs(np.asarray(api).astype(int) - np.asarray(plain)).max() > 8, "the image prompt must change the picture"


def test_each_image_prompt_is_recorded_and_from_replays_it(generate, run_main, tiny_sd1, files, tmp_path):
    root, models, cn, picture, face = files
    plus, faceid = models / "ip-adapter-plus_sd15.safetensors", models / "ip-adapter-faceid_sd15.bin"
    flags = ["--control", f"{picture}:{cn}", "--image-prompt", f"{picture}:0.5", "--ip-adapter", plus]
    code, out, err = generate(tiny_sd1, tmp_path / "a", *flags, "--image-encoder", models)
    assert code == 0, err
    params, line = texts(out.strip())
    (rec,) = params["image_prompts"]
    assert (rec["image"], rec["scale"], rec["adapter"]) == (str(picture), 0.5, str(plus))
    assert (rec["adapter_name"], rec["adapter_kind"], rec["module"]) == (
        "ip-adapter-plus_sd15",
        "plus",
        "ip-adapter_clip_sd15",
    )
    assert rec["image_encoder"] == str(models / "image_encoder") and len(rec["image_hash"]) == 16
    assert len(rec["adapter_hash"]) == 10 and len(rec["a1111_hash"]) == 8
    fields = parse_infotext(line)[2]
    assert fields["ControlNet 0"].startswith("Module: none, Model: cn [")
    assert fields["ControlNet 1"] == (
        f"Module: ip-adapter_clip_sd15, Model: ip-adapter-plus_sd15 [{rec['a1111_hash']}], Weight: 0.5, "
        "Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 0.5, Threshold B: 0.5, Guidance Start: 0.0, "
        "Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced"
    )
    code, again, err = run_main(["generate", "--from", out.strip(), "--quiet", "--out", tmp_path / "b"])
    assert code == 0, err
    assert np.array_equal(pixels(again.strip()), pixels(out.strip()))
    assert texts(again.strip())[0]["image_prompts"] == params["image_prompts"]
    # FaceID from a pickle: --allow-pickle threads through; the embeddings' hash is recorded
    code, out, err = generate(tiny_sd1, tmp_path / "c", "--image-prompt", face, "--ip-adapter", faceid)
    assert code == 2 and "is a pickle file" in err and "--allow-pickle" in err and len(err.splitlines()) == 1
    code, out, err = generate(
        tiny_sd1, tmp_path / "c", "--image-prompt", face, "--ip-adapter", faceid, "--allow-pickle"
    )
    assert code == 0, err
    (rec,) = texts(out.strip())[0]["image_prompts"]
    assert (rec["image"], rec["adapter_kind"], rec["module"], rec["image_encoder"]) == (
        str(face),
        "faceid",
        "ip-adapter_face_id",
        None,
    )
    argv = ["generate", "--from", out.strip(), "--quiet", "--allow-pickle", "--out", tmp_path / "d"]
    code, again, err = run_main(argv)
    assert code == 0, err
    assert np.array_equal(pixels(again.strip()), pixels(out.strip()))


def test_from_finds_the_image_beside_the_png_and_checks_its_hash(generate, run_main, tiny_sd1, files, tmp_path):
    root, models, cn, picture, face = files
    moved = tmp_path / "face.npy"
    shutil.copy(face, moved)
    adapter = models / "ip-adapter-faceid_sd15.safetensors"
    code, out, err = generate(tiny_sd1, tmp_path / "a", "--image-prompt", moved, "--ip-adapter", adapter)
    assert code == 0, err
    made = tmp_path / "a" / "made.png"
    shutil.move(out.strip(), made)
    shutil.move(moved, tmp_path / "a" / "face.npy")  # the recorded path is gone; a copy lies beside the PNG
    code, again, err = run_main(["generate", "--from", made, "--quiet", "--out", tmp_path / "b"])
    assert code == 0, err
    assert np.array_equal(pixels(again.strip()), pixels(made))
    np.save(tmp_path / "a" / "face.npy", np.zeros(FACE_DIM, np.float32))
    code, _, err = run_main(["generate", "--from", made, "--quiet", "--out", tmp_path / "c"])
    assert code == 2 and "is not the image prompt recorded (hash" in err and len(err.splitlines()) == 1, err
    (tmp_path / "a" / "face.npy").unlink()
    code, _, err = run_main(["generate", "--from", made, "--quiet", "--out", tmp_path / "c"])
    assert code == 2 and f"the image prompt recorded in {made}, {moved}, is missing" in err
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


A1111 = (
    "a red apple\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 3, Size: 64x64, Model hash: 0123456789, "
    'Model: v1-5, ControlNet 0: "Module: ip-adapter_clip_sd15, Model: ip-adapter_sd15 [6a3f6166], Weight: 0.6, '
    "Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 0.5, Threshold B: 0.5, Guidance Start: 0.0, "
    'Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced", Version: v1.9.4'
)


def test_an_a1111_ip_adapter_unit_is_read_as_an_image_prompt(run_main, tiny_sd1, pipe_sd1, files, tmp_path):
    root, models, cn, picture, face = files
    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", A1111)
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png", pnginfo=info)
    argv = ["generate", "--from", tmp_path / "a1111.png", "--model", tiny_sd1, "--quiet"]
    code, _, err = run_main([*argv, "--out", tmp_path / "x"])
    assert code == 2 and "used IP-Adapter ip-adapter_sd15 [6a3f6166]" in err and "give --image-prompt IMG" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
    code, _, err = run_main([*argv, "--out", tmp_path / "x", "--image-prompt", picture])
    assert code == 2 and "--image-prompt needs --ip-adapter FILE" in err and "ip-adapter_sd15" in err
    adapter = models / "ip-adapter_sd15.safetensors"
    code, out, err = run_main([*argv, "--out", tmp_path / "o", "--image-prompt", picture, "--ip-adapter", adapter])
    assert code == 0, err
    assert "A1111 does not store image prompts" in err and "ControlNet" not in err.split("IP-Adapter")[0]
    (rec,) = texts(out.strip())[0]["image_prompts"]
    assert rec["scale"] == 0.6 and "controls" not in texts(out.strip())[0]
    api = pipe_sd1(
        "a red apple", steps=2, seed=3, guidance=7, scheduler="euler", image_prompts=[ImagePrompt(picture, 0.6)],
        ip_adapter=adapter,
    )  # fmt: skip
    assert np.array_equal(pixels(out.strip()), np.asarray(api[0]))


BAD = [
    (["--image-prompt", "{pic}:0.5"], "--image-prompt needs --ip-adapter FILE"),
    (["--ip-adapter", "{base}"], "--ip-adapter and --image-encoder need --image-prompt"),
    (["--image-encoder", "{models}"], "--ip-adapter and --image-encoder need --image-prompt"),
    (["--image-prompt", "{pic}:3", "--ip-adapter", "{base}"], "--image-prompt 1: scale must be a number from 0 to 2"),
    (["--image-prompt", "{pic}:-1", "--ip-adapter", "{base}"], "scale must be a number from 0 to 2, got -1"),
    (["--image-prompt", "{pic}:nan", "--ip-adapter", "{base}"], "scale must be a number from 0 to 2, got nan"),
    (["--image-prompt", ":0.5", "--ip-adapter", "{base}"], "--image-prompt must be IMG[:SCALE]"),
    (["--image-prompt", "{pic}", "--ip-adapter", "{base}"] + ["--image-prompt", "{pic}"] * 8, "at most 8"),
    (["--image-prompt", "nope.png", "--ip-adapter", "{base}"], "--image-prompt 1.image nope.png"),
    (["--image-prompt", "nope.npy", "--ip-adapter", "{faceid}"], "--image-prompt 1.image nope.npy"),
    (["--image-prompt", "{pic}", "--ip-adapter", "nowhere.safetensors"], "--image-prompt 1: --ip-adapter nowhere"),
    (["--image-prompt", "{pic}", "--ip-adapter", "{pic}"], "--image-prompt 1: --ip-adapter"),
    (["--image-prompt", "{pic}", "--ip-adapter", "{cnfile}"], "is not an IP-Adapter"),
    (["--image-prompt", "{pic}", "--ip-adapter", "{base}", "--image-encoder", "nowhere"], "nowhere is not a folder"),
    (["--image-prompt", "{pic}", "--ip-adapter", "{lone}"], "no image encoder for ip-adapter_sd15.safetensors"),
    (["--image-prompt", "{pic}", "--ip-adapter", "{basebin}"], "is a pickle file"),
]


@pytest.mark.parametrize("flags,message", BAD)
def test_bad_image_prompt_flags_are_one_line_exit_2_before_the_model_loads(
    generate, tiny_sd1, files, tmp_path, monkeypatch, flags, message
):
    root, models, cn, picture, face = files
    lone = tmp_path / "lone" / "ip-adapter_sd15.safetensors"  # no image encoder anywhere near
    lone.parent.mkdir()
    shutil.copy(models / "ip-adapter_sd15.safetensors", lone)
    names = dict(pic=picture, models=models, lone=lone, cnfile=cn / "diffusion_pytorch_model.safetensors")
    names.update(base=models / "ip-adapter_sd15.safetensors", basebin=models / "ip-adapter_sd15.bin")
    names.update(faceid=models / "ip-adapter-faceid_sd15.safetensors")
    monkeypatch.setattr(Pipeline, "from_pretrained", lambda *a, **k: pytest.fail("the model must not load"))
    code, out, err = generate(tiny_sd1, tmp_path / "o", *(str(f).format(**names) for f in flags))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_faceid_prompt_needs_face_embeddings(generate, tiny_sd1, files, tmp_path):
    root, models, cn, picture, face = files
    flags = ["--image-prompt", picture, "--ip-adapter", models / "ip-adapter-faceid_sd15.safetensors"]
    code, out, err = generate(tiny_sd1, tmp_path, *flags)
    assert code == 2 and "a FaceID adapter takes face embeddings as a .npy or .safetensors file" in err
    assert len(err.splitlines()) == 1 and out == ""


def test_image_prompt_values_split_from_the_right(tmp_path):
    (tmp_path / "a:0.5").write_bytes(b"x")
    assert split_prompt(f"{tmp_path}/a:0.5") == {"image": f"{tmp_path}/a:0.5", "scale": None}
    assert split_prompt(f"{tmp_path}/a:0.5:0.7") == {"image": f"{tmp_path}/a:0.5", "scale": 0.7}
    assert split_prompt("shots/b:c.png") == {"image": "shots/b:c.png", "scale": None}
    assert split_prompt("p.png:1") == {"image": "p.png", "scale": 1}
    assert split_prompt("0.5") == {"image": "0.5", "scale": None}
    for bad in (":1", "p.png:", ""):
        with pytest.raises(UsageError):
            split_prompt(bad)
