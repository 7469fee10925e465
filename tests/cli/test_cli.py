"""`latentdiff generate` driven as users drive it. A subprocess only where the real process
matters (end to end, console script, --help without torch); everything else calls
`latentdiff.cli.main` in-process. Bad model paths, pickle and hub errors: see test_models.py."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli
from helpers import fails, generate, meta, pixels
from PIL import Image

from latentdiff.cli.main import main

META_KEYS = {
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance",
    "scheduler",
    "width",
    "height",
    "model",
    "model_hash",
    "dtype",
    "device",
    "versions",
}
FLAGS = [
    "--model",
    "--out",
    "--steps",
    "--guidance",
    "--negative",
    "--seed",
    "--width",
    "--height",
    "--num-images",
    "--scheduler",
    "--device",
    "--dtype",
    "--prompts",
    "--from",
    "--allow-pickle",
    "--quiet",
]


# ---- the real process ----------------------------------------------------------------------


def test_generate_end_to_end_in_a_subprocess(tiny_sd1, tmp_path):
    out = tmp_path / "out"
    r = run_cli(
        "generate",
        "a red apple",
        "--model",
        tiny_sd1,
        "--out",
        out,
        "--steps",
        2,
        "--num-images",
        2,
        "--seed",
        3,
        "--quiet",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", "--quiet must keep stderr free of progress bars and library chatter"
    written = r.stdout.splitlines()
    assert written == [str(p) for p in sorted(out.glob("*.png"))] and len(written) == 2
    first, second = map(meta, written)
    assert META_KEYS <= first.keys()
    assert (first["prompt"], first["seed"], second["seed"], first["steps"]) == ("a red apple", 3, 4, 2)
    assert (first["guidance"], first["width"], first["height"]) == (7.5, 64, 64)
    assert first["scheduler"] is None and first["scheduler_class"] == "PNDMScheduler"  # the model's own
    assert first["model"] == str(tiny_sd1.resolve()) and len(first["model_hash"]) == 12
    assert first["dtype"] in ("fp32", "fp16", "bf16") and first["device"]
    assert {"latentdiff", "torch", "diffusers", "transformers"} <= first["versions"].keys()
    assert not np.array_equal(pixels(written[0]), pixels(written[1]))


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from latentdiff.cli.main import main\n"
        "for argv in (['--help'], ['generate', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "print('torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "False"
    for flag in FLAGS:
        assert flag in r.stdout, f"generate --help does not mention {flag}"


def test_console_script_is_installed():
    exe = shutil.which("latentdiff")
    assert exe, "the `latentdiff` console script is not on PATH; pip install -e . creates it"
    for argv in (["--help"], ["generate", "--help"]):
        r = subprocess.run([exe, *argv], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "usage: latentdiff" in r.stdout, r.stderr
    # the exit status and the one-line error survive the real entry point (checked before torch loads)
    r = subprocess.run([exe, "generate", "x", "--steps", "0"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", "latentdiff: error: --steps must be >= 1, got 0\n")


# ---- in-process: outputs, --from, --prompts --------------------------------------------------


@pytest.fixture(scope="module")
def made(tiny_sd1, tmp_path_factory):
    """One PNG written by the CLI (shared: only test_identical_runs_never_overwrite adds to its folder)."""
    out = tmp_path_factory.mktemp("made")
    assert (
        main(
            [
                "generate",
                "a red apple",
                "--model",
                str(tiny_sd1),
                "--out",
                str(out),
                "--steps",
                "2",
                "--seed",
                "3",
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    (path,) = out.glob("*.png")
    return path


def test_identical_runs_never_overwrite(made, tiny_sd1, capsys):
    before = made.read_bytes()
    (again,) = generate(capsys, "a red apple", "--model", tiny_sd1, "--out", made.parent, "--steps", 2, "--seed", 3)
    assert again != made and again.parent == made.parent
    assert made.read_bytes() == before
    assert np.array_equal(pixels(again), pixels(made))
    assert sorted(p.name for p in made.parent.iterdir()) == ["a-red-apple-s3-0000.png", "a-red-apple-s3-0001.png"]
    assert made.name == "a-red-apple-s3-0000.png"


def test_from_reproduces_the_pixels(made, tmp_path, capsys):
    (path,) = generate(capsys, "--from", made, "--out", tmp_path / "b")
    assert np.array_equal(pixels(path), pixels(made))
    assert meta(path)["seed"] == 3 and meta(path)["prompt"] == "a red apple"


def test_from_with_seed_overrides_the_seed(made, pipe_sd1, tmp_path, capsys):
    (path,) = generate(capsys, "--from", made, "--seed", 9, "--out", tmp_path / "c")
    p = meta(path)
    assert (p["seed"], p["steps"], p["prompt"]) == (9, 2, "a red apple")
    direct = pipe_sd1("a red apple", steps=2, seed=9)[0]
    assert np.array_equal(pixels(path), np.asarray(direct))


def test_prompts_file_skips_blank_lines_and_comments(tiny_sd1, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red apple\n\n# a comment, not a prompt\nphoto of a cat\n", encoding="utf-8")
    paths = generate(
        capsys,
        "--prompts",
        prompts,
        "--model",
        tiny_sd1,
        "--out",
        tmp_path / "out",
        "--steps",
        1,
        "--num-images",
        2,
        "--seed",
        0,
    )
    # each prompt's images start again from --seed, so a prompt file is a fair comparison of prompts
    assert [(meta(p)["prompt"], meta(p)["seed"]) for p in paths] == [
        ("a red apple", 0),
        ("a red apple", 1),
        ("photo of a cat", 0),
        ("photo of a cat", 1),
    ]
    assert all(p.is_file() for p in paths)


# ---- bad input: exit 2, one line, no traceback -----------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--width", "50"], "width 50 is not a multiple of 4; try 48 or 52"),
        (["--height", "30"], "height 30 is not a multiple of 4; try 28 or 32"),
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--guidance", "-1"], "--guidance must be >= 0, got -1.0"),
        (["--num-images", "0"], "--num-images must be >= 1, got 0"),
        (["--scheduler", "k_eulerx"], "unknown scheduler 'k_eulerx'; choose one of: euler_a (Euler a), euler (Euler)"),
        (["--dtype", "fp8"], "unknown dtype 'fp8'"),
    ],
)
def test_bad_flags(tiny_sd1, tmp_path, capsys, argv, message):
    line = fails(capsys, "x", "--model", tiny_sd1, "--out", tmp_path / "out", *argv)
    assert message in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["missing", "not_an_image", "no_parameters"])
def test_bad_from_image(tmp_path, capsys, kind):
    png = tmp_path / "in.png"
    if kind == "not_an_image":
        png.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    elif kind == "no_parameters":
        Image.new("RGB", (8, 8), "red").save(png)
    message = {
        "missing": "does not exist",
        "not_an_image": "cannot be read",
        "no_parameters": "has no latentdiff parameters",
    }[kind]
    assert message in fails(capsys, "--from", png, "--out", tmp_path / "out")


@pytest.mark.parametrize("content", ["", "\n# only a comment\n\n"])
def test_empty_prompts_file(tmp_path, capsys, content):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(content, encoding="utf-8")
    assert "holds no prompts" in fails(capsys, "--prompts", prompts)


def test_no_prompt_at_all(tiny_sd1, capsys):
    assert "no prompt given" in fails(capsys, "--model", tiny_sd1)


def test_argparse_errors_are_one_line_too(capsys):
    assert main(["generate", "x", "--steps", "many"]) == 2  # main returns the code of a refused command line
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["latentdiff: error: --steps must be a whole number, got 'many'"]
