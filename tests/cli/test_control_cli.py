"""`generate --control` and `latentdiff detect`: in-process on the tiny models, equal to the Python
API; each unit recorded in the PNG and as A1111's ControlNet line, replayed by --from; bad flags one
line, exit 2."""

import shutil

import numpy as np
import pytest
from helpers import pixels, tiny_controlnet
from helpers import png_texts as texts
from PIL import Image, PngImagePlugin

from latentdiff import Control
from latentdiff.config.control_flags import split_spec
from latentdiff.errors import UsageError
from latentdiff.images.infotext import parse_infotext
from latentdiff.images.preprocess import preprocess


@pytest.fixture(scope="module")
def files(pipe_sd1, tmp_path_factory):
    root = tmp_path_factory.mktemp("ctl")
    cn = root / "nets" / "cn:canny"  # a ':' in the model's path
    tiny_controlnet(pipe_sd1.components.unet, pipe_sd1.scale_factor, 1).save_pretrained(cn)
    picture = root / "photo.png"
    rng = np.random.default_rng(1)
    a = np.full((80, 96, 3), 230, np.uint8)
    a[20:60, 30:70] = rng.integers(0, 120, (40, 40, 3))
    Image.fromarray(a).save(picture)
    return root, cn, picture


SPEC = ("--control-module", "canny:50:150", "--control-resize", "fit")


def test_generate_control_equals_the_python_api(generate, tiny_sd1, pipe_sd1, files, tmp_path):
    root, cn, picture = files
    code, out, err = generate(tiny_sd1, tmp_path, "--control", f"{picture}:{cn}:0.7:0.1:0.9", *SPEC)
    assert code == 0, err
    unit = Control(picture, cn, 0.7, 0.1, 0.9, resize="fit", module="canny", threshold_a=50, threshold_b=150)
    api = pipe_sd1("a red apple", steps=2, seed=3, controls=[unit])[0]
    plain = pipe_sd1("a red apple", steps=2, seed=3)[0]
    assert np.array_equal(pixels(out.strip()), np.asarray(api))
    assert np.abs(np.asarray(api).astype(int) - np.asarray(plain)).max() > 8, "the unit must change the picture"


def test_each_unit_is_recorded_and_from_replays_it(generate, run_main, tiny_sd1, files, tmp_path):
    root, cn, picture = files
    code, out, err = generate(tiny_sd1, tmp_path / "a", "--control", f"{picture}:{cn}:0.7:0.1:0.9", *SPEC)
    assert code == 0, err
    params, line = texts(out.strip())
    (rec,) = params["controls"]
    assert rec["image"] == str(picture) and rec["model"] == str(cn) and rec["model_name"] == "cn:canny"
    assert (rec["module"], rec["threshold_a"], rec["threshold_b"], rec["processor_res"]) == ("canny", 50, 150, 512)
    assert (rec["weight"], rec["start"], rec["end"], rec["resize"], rec["mode"]) == (0.7, 0.1, 0.9, "fit", "balanced")
    assert len(rec["image_hash"]) == 16 and len(rec["model_hash"]) == 12 and len(rec["a1111_hash"]) == 8
    expected = (
        f"Module: canny, Model: cn_canny [{rec['a1111_hash']}], Weight: 0.7, Resize Mode: Resize and Fill, "
        "Processor Res: 512, Threshold A: 50.0, Threshold B: 150.0, Guidance Start: 0.1, Guidance End: 0.9, "
        "Pixel Perfect: False, Control Mode: Balanced"
    )
    assert parse_infotext(line)[2]["ControlNet 0"] == expected
    code, again, err = run_main(["generate", "--from", out.strip(), "--quiet", "--out", str(tmp_path / "b")])
    assert code == 0, err
    assert np.array_equal(pixels(again.strip()), pixels(out.strip()))
    assert texts(again.strip())[0]["controls"] == params["controls"]


def test_from_finds_the_picture_beside_the_image_and_checks_its_pixels(generate, run_main, tiny_sd1, files, tmp_path):
    root, cn, picture = files
    moved = tmp_path / "photo.png"
    shutil.copy(picture, moved)
    code, out, err = generate(tiny_sd1, tmp_path / "a", "--control", f"{moved}:{cn}")
    assert code == 0, err
    made = tmp_path / "a" / "made.png"
    shutil.move(out.strip(), made)
    shutil.move(moved, tmp_path / "a" / "photo.png")  # the recorded path is gone; a copy lies beside the PNG
    code, again, err = run_main(["generate", "--from", str(made), "--quiet", "--out", str(tmp_path / "b")])
    assert code == 0, err
    assert np.array_equal(pixels(again.strip()), pixels(made))
    Image.new("RGB", (80, 96), "red").save(tmp_path / "a" / "photo.png")
    code, _, err = run_main(["generate", "--from", str(made), "--quiet", "--out", str(tmp_path / "c")])
    assert code == 2 and "is not the one recorded (pixel hash" in err and len(err.splitlines()) == 1
    (tmp_path / "a" / "photo.png").unlink()
    code, _, err = run_main(["generate", "--from", str(made), "--quiet", "--out", str(tmp_path / "c")])
    assert code == 2 and f"the control image recorded in {made}, {moved}, is missing" in err
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


def test_from_names_a_missing_model(generate, run_main, tiny_sd1, pipe_sd1, files, tmp_path):
    root, cn, picture = files
    gone = tmp_path / "gone"
    shutil.copytree(cn, gone)
    code, out, err = generate(tiny_sd1, tmp_path / "a", "--control", f"{picture}:{gone}")
    assert code == 0, err
    shutil.rmtree(gone)
    code, _, err = run_main(["generate", "--from", out.strip(), "--quiet", "--out", str(tmp_path / "b")])
    assert code == 2 and f"the ControlNet model recorded in {out.strip()}, {gone}, is missing" in err


A1111 = (
    "a red apple\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 3, Size: 64x64, Model hash: 0123456789, "
    'Model: v1-5, ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 0.6, '
    "Resize Mode: Just Resize, Processor Res: 256, Threshold A: 40.0, Threshold B: 120.0, Guidance Start: 0.2, "
    'Guidance End: 0.8, Pixel Perfect: False, Control Mode: My prompt is more important", Version: v1.9.4'
)


def test_an_a1111_controlnet_line_is_read(run_main, tiny_sd1, pipe_sd1, files, tmp_path):
    root, cn, picture = files
    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", A1111)
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png", pnginfo=info)
    argv = ["generate", "--from", str(tmp_path / "a1111.png"), "--model", str(tiny_sd1), "--quiet"]
    code, _, err = run_main([*argv, "--out", str(tmp_path / "x")])
    assert code == 2 and "used ControlNet 0 (control_v11p_sd15_canny [d14c016b])" in err
    assert "give --control IMAGE:MODEL for each unit" in err
    code, out, err = run_main([*argv, "--out", str(tmp_path / "o"), "--control", f"{picture}:{cn}"])
    assert code == 0, err
    (rec,) = texts(out.strip())[0]["controls"]
    got = {k: rec[k] for k in ("module", "processor_res", "threshold_a", "threshold_b", "weight", "start", "end")}
    assert got == dict(
        module="canny", processor_res=256, threshold_a=40, threshold_b=120, weight=0.6, start=0.2, end=0.8
    )
    assert (rec["resize"], rec["mode"]) == ("stretch", "prompt")
    unit = Control(picture, cn, 0.6, 0.2, 0.8, "stretch", "canny", 256, 40, 120)
    api = pipe_sd1(
        "a red apple", steps=2, seed=3, guidance=7, scheduler="euler", controls=[unit], control_mode="prompt"
    )
    assert np.array_equal(pixels(out.strip()), np.asarray(api[0]))


BAD = [
    (["--control", "x.png"], "--control must be IMAGE:MODEL[:WEIGHT[:START:END]]"),
    (["--control", "{pic}:{cn}:1:0.5"], "give WEIGHT or WEIGHT:START:END"),
    (["--control", "{pic}:{cn}:3"], "weight must be a number from 0 to 2, got 3"),
    (["--control", "{pic}:{cn}:nan"], "weight must be a number from 0 to 2, got nan"),
    (["--control", "{pic}:{cn}:1:0.8:0.2"], "start (0.8) must be below end (0.2)"),
    (["--control", "{pic}:{cn}:1:0:1.5"], "end must be a number from 0 to 1"),
    (["--control", "{pic}:{cn}", "--control-module", "sobel"], "module must be one of none, invert, canny"),
    (["--control", "{pic}:{cn}", "--control-module", "depth_midas"], "--control-module none"),
    (["--control", "{pic}:{cn}", "--control-module", "canny:0"], "threshold A of canny (Low Threshold) must be 1..255"),
    (["--control", "{pic}:{cn}", "--control-module", "canny:a"], "--control-module thresholds must be numbers"),
    (["--control", "{pic}:{cn}", "--control-res", "63"], "from 64 to 2048, got 63"),
    (["--control", "{pic}:{cn}", "--control-res", "1.5"], "--control-res must be a whole number"),
    (["--control", "{pic}:{cn}", "--control-resize", "cover"], "invalid choice: 'cover'"),
    (["--control", "{pic}:{cn}", "--control-mode", "guesss"], "invalid choice: 'guesss'"),
    (["--control-module", "canny"], "need --control IMAGE:MODEL"),
    (
        [
            "--control",
            "{pic}:{cn}",
            "--control",
            "{pic}:{cn}",
            "--control-res",
            "64",
            "--control-res",
            "64",
            "--control-res",
            "64",
        ],
        "--control-res is given 3 times for 2 --control units",
    ),
    (["--control", "nope.png:{cn}"], "--control 1: control image nope.png is not usable: missing file"),
    (["--control", "{pic}:nowhere"], "--control 1: ControlNet model nowhere does not exist"),
    (["--control", "{pic}:{pic}"], "is neither safetensors nor a torch checkpoint"),
]


@pytest.mark.parametrize("flags,message", BAD)
def test_bad_control_flags_are_one_line_exit_2(generate, tiny_sd1, files, tmp_path, flags, message):
    root, cn, picture = files
    code, out, err = generate(tiny_sd1, tmp_path, *(f.format(pic=picture, cn=cn) for f in flags))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert message in err and "Traceback" not in err
    assert not tmp_path.exists() or not [p for p in tmp_path.iterdir() if p.suffix == ".png"]


def test_control_values_split_from_the_right(tmp_path):
    (tmp_path / "a:b.png").write_bytes(b"x")
    assert split_spec(f"{tmp_path}/a:b.png:m:odel:0.5") == {
        "image": f"{tmp_path}/a:b.png",
        "model": "m:odel",
        "weight": 0.5,
        "start": None,
        "end": None,
    }
    assert split_spec("p.png:m:1:0:0.5")["model"] == "m" and split_spec("p.png:m:1:0:0.5")["end"] == 0.5
    assert split_spec("p.png:m:x:1")["model"] == "m:x"
    with pytest.raises(UsageError):
        split_spec("p.png:")


def test_detect_writes_the_map_and_never_overwrites(run_main, files, tmp_path):
    root, cn, picture = files
    argv = ["detect", str(picture), "--module", "canny", "--threshold-a", "50", "--resolution", "128"]
    first, second = (run_main([*argv, "--out", str(tmp_path)]) for _ in range(2))
    assert first[0] == second[0] == 0 and first[1] != second[1]
    assert first[1].strip().endswith("photo-canny-0000.png") and second[1].strip().endswith("photo-canny-0001.png")
    expected = preprocess(Image.open(picture), "canny", 128, 50, None)
    assert np.array_equal(pixels(first[1].strip()), np.asarray(expected))


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--module", "openpose"], "runs a network whose weights latentdiff does not ship"),
        (["--module", "canny", "--threshold-b", "300"], "threshold B of canny (High Threshold) must be 1..255"),
        (["--resolution", "4096"], "from 64 to 2048"),
        (["--resolution", "x"], "--resolution must be a whole number"),
        (["--seed", "-1"], "--seed must be >= 0"),
    ],
)
def test_detect_refusals_are_one_line(run_main, files, tmp_path, flags, message):
    code, out, err = run_main(["detect", str(files[2]), *flags, "--out", str(tmp_path / "o")])
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()
    code, out, err = run_main(["detect", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")])
    assert code == 2 and "image" in err and "missing file" in err
