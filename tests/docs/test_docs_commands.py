"""Every command the docs show works as written.

The commands are read from the docs themselves (fenced ```bash blocks and inline `latentdiff ...` code
in README.md, docs/*.md and the shipped model's card), so a command added to the docs is checked
without editing this file:
- every `latentdiff` command, inline syntax lines included, is parsed by the CLI's own parser (a flag
  the docs show that the CLI lacks fails here);
- every command of a fenced block runs, in the order of its file, in a sandbox folder holding the
  repository's configs and stand-ins for the files a user brings (photo.jpg, mask.png, my-pictures/,
  a tiny random SD model where the docs name a user's model); a command is changed only where the
  docs say how the check runs it (REDUCED below: the training recipes at 2 steps), or not run at all
  for a reason given in NOT_RUN (installs, GPUs, hours of training). A fenced command in neither table
  and not runnable here fails the test, so the tables cannot drift from the docs.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "checkpoints/emoji/README.md"]

FENCE = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"(?<!`)`(latentdiff [^`]+)`(?!`)")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*([./:].*)?$")  # MODEL, DIR/, IMAGE.png, PATH:SCALE
ENV_ASSIGN = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def logical_lines(block: str) -> list[str]:
    """Lines with backslash continuations joined and a quoted string spanning lines kept whole."""
    lines, pending = [], ""
    for line in block.replace("\\\n", " ").splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the string goes on in the next line
            continue
        lines.append(pending)
        pending = ""
    return lines + ([pending] if pending else [])


def fenced_commands(block: str) -> list[str]:
    """Each command of a ```bash block: continuations joined, comments dropped, `&&` chains split."""
    out = []
    for line in logical_lines(block):
        words = shlex.split(line, comments=True)
        while words and ENV_ASSIGN.match(words[0]):  # OMP_NUM_THREADS=1 latentdiff ...
            words.pop(0)
        command = []
        for w in words + ["&&"]:
            if w != "&&":
                command.append(w)
            elif command:
                out.append(shlex.join(command))
                command = []
    return out


def doc_commands(path: Path) -> list[str]:
    """The commands of one doc file in the order they appear: fenced blocks and inline spans."""
    text, found, pos = path.read_text(encoding="utf-8"), [], 0
    for m in FENCE.finditer(text):
        found += inline_commands(text[pos : m.start()]) + fenced_commands(m.group(1))
        pos = m.end()
    return found + inline_commands(text[pos:])


def inline_commands(prose: str) -> list[str]:
    spans = [c for m in INLINE.findall(prose) for c in fenced_commands(" ".join(m.split()))]
    return [c for c in spans if len(c.split()) > 2]  # `latentdiff finetune` names a command


def documented() -> list[tuple[str, str]]:
    """(file, command) for every fenced command and inline `latentdiff ...` code span."""
    return [(str(path.relative_to(ROOT)), c) for path in DOC_FILES for c in doc_commands(path)]


def latentdiff_argv(command: str) -> list[str] | None:
    """The argv after `latentdiff` (also under `accelerate launch ... -m latentdiff.cli`), else None."""
    words = shlex.split(command)
    if words[0] == "latentdiff":
        return words[1:]
    if words[:2] == ["accelerate", "launch"] and "latentdiff.cli" in words:
        return words[words.index("latentdiff.cli") + 1 :]
    return None


def syntax_argv(argv: list[str]) -> list[str]:
    """A syntax line as a command: `[--dtype fp16]` -> `--dtype fp16`, `A|B` -> `A`, `...` dropped."""
    out = []
    for w in argv:
        w = w.strip("[]")
        if w in ("", "...") or w.endswith("]..."):
            continue
        if w.startswith("-") and "|" in w:
            w = w.split("|")[0]
        if PLACEHOLDER.match(w):  # `--step N`, `RUN`, `DIR`: a value of the flag's type
            w = "1"
        out.append(w)
    return out


@pytest.mark.parametrize(
    "doc,command", [(d, c) for d, c in documented() if latentdiff_argv(c) is not None], ids=lambda v: v[:60]
)
def test_every_documented_command_parses(doc, command, capsys):
    from latentdiff.cli.main import build_parser

    argv = latentdiff_argv(command)
    try:
        args = build_parser().parse_args(syntax_argv(argv))
    except SystemExit as e:
        if e.code == 0 and "--help" in argv:
            return
        pytest.fail(f"{doc}: `{command}` is refused by the CLI's parser: {capsys.readouterr().err.strip()} ({e})")
    assert getattr(args, "func", None), f"{doc}: `{command}` names no command"


# ---- running them ---------------------------------------------------------------------------
# Commands are matched by their start. What is not run, and why:
NOT_RUN = {
    "pip install": "an install: .ci/run does it on every fresh machine",
    "bash .ci/run": "it runs this test suite",
    "apt-get": "a system install: .ci/run does it",
    "python -m pytest": "it runs this test suite",
    "accelerate launch": "several processes: tests/runtime/test_sharding.py and test_finetune.py run the same commands",
    "latentdiff serve": "a server that runs until stopped: tests/server/ start the real one",
    "latentdiff generate 'a house' --model path/to/sd15 --control sketch.png:t2iadapter": "no T2I-Adapter fits the "
    "docs' fast SD stand-in (attention only in its last block); tests/formats/test_control_files.py runs .pth "
    "adapters on the tiny SD1",
    "latentdiff generate 'a castle' --model stable-diffusion-3.5-medium/": "an SD 3.5 folder (several GB; a tiny "
    "one at 1024 px is minutes here); tests/cli/test_sd3_generate.py runs generate on a tiny SD 3.5 folder",
    "latentdiff generate 'a castle' --model Chroma1-HD/": "a Chroma folder (many GB); "
    "tests/parity/test_chroma.py runs a tiny one against ChromaPipeline",
    "latentdiff generate 'a castle' --model Qwen-Image/": "a Qwen-Image folder (tens of GB); "
    "tests/cli/test_qwen_z_generate.py runs generate on a tiny one",
    "latentdiff generate 'a castle' --model Z-Image-Turbo/": "a Z-Image folder (several GB); "
    "tests/cli/test_qwen_z_generate.py runs generate on a tiny one",
    "latentdiff generate 'a castle' --model '~/ComfyUI/models/": "a ComfyUI install's models folder (tens of GB); "
    "tests/formats/test_comfy_components.py runs generate on a tiny ComfyUI tree against a diffusers folder",
    "latentdiff generate 'a photo of sks dog' --model runs/flux": "the LoRA of a Flux.1 run (the GPU recipe above); "
    "tests/parity/test_flow_finetune.py generates with a tiny run's LoRA against FluxPipeline",
    "latentdiff generate 'a cat' --model pixel-base/": "an IF stage I layout folder; tests/workflows/test_pixel_base.py "
    "runs generate --model on a tiny one against IFPipeline",
    "latentdiff generate 'a castle' --model v1-5.ckpt": "a .ckpt carries no configs, so it is read as the real "
    "SD 1.5 (4 GB), which no tiny stand-in can be; tests/formats/test_single_file.py reads a tiny .ckpt up to that check",
}
# How the check shortens what takes minutes to hours, as the docs say (flags appended to the command):
# training recipes run 2 steps in fp32 (bf16 is many times slower on CPUs without bf16 arithmetic;
# train-vae's closing PSNR and train-clip's retrieval on 8 training images; train-clip's batch 16),
# the emoji dataset holds about 200 of the 3,655 names (every name the docs draw among them), and
# the emoji evaluation scores 4 training and 4 held-out names at seed 0.
TWO_STEPS = ["--max-steps", "2", "--mixed-precision", "no"]
REDUCED: dict[str, list[str]] = {
    "latentdiff build-emoji": ["--emoji-test", "emoji-test-subset.txt"],
    "latentdiff finetune": TWO_STEPS,
    "latentdiff train-vae": TWO_STEPS + ["--eval-train-images", "8"],
    "latentdiff train-clip": TWO_STEPS + ["--eval-train-images", "8", "--batch-size", "16"],
    "latentdiff eval-emoji data/emoji --cascade": ["--n-heldout", "2", "--seeds", "0"],
    "latentdiff eval-emoji": ["--n-train", "4", "--n-heldout", "4", "--seeds", "0"],
}


def not_run_reason(command: str) -> str | None:
    return next((why for start, why in NOT_RUN.items() if command.startswith(start)), None)


def reduced(command: str, argv: list[str]) -> list[str]:
    extra = next((flags for start, flags in REDUCED.items() if command.startswith(start)), [])
    return argv + extra


def has_placeholder(argv: list[str]) -> bool:
    return any(PLACEHOLDER.match(w.strip("[]")) or w.strip("[]") != w for w in argv)


def make_standins(folder: Path) -> None:
    """The files a user brings, where the docs name them: tiny random models and small pictures."""
    import json
    import shutil

    import torch
    from control_standins import make_control_standins
    from PIL import Image, ImageDraw
    from safetensors.torch import save_file

    from latentdiff.cli.main import main
    from latentdiff.models.testing import make_tiny_model, make_tiny_sdxl, make_tiny_upscaler

    photo = Image.new("RGB", (64, 64), (250, 240, 200))
    ImageDraw.Draw(photo).ellipse((12, 12, 52, 52), fill=(200, 30, 30))
    for name in ("photo.jpg", "small.png", "some-64px.png"):
        photo.save(folder / name)
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((32, 0, 63, 63), fill=255)
    mask.save(folder / "mask.png")
    pictures = folder / "my-pictures"
    pictures.mkdir()
    for i, colour in enumerate(((200, 30, 30), (30, 30, 200))):
        Image.new("RGB", (64, 64), colour).save(pictures / f"{i}.png")
        (pictures / f"{i}.txt").write_text("a photo of sks dog")
    (folder / "prompts.txt").write_text("grinning face\nred heart\n")
    write_emoji_subset(folder / "emoji-test-subset.txt")
    make_fast_sd(folder / "path/to/sd15")
    make_tiny_sdxl(folder / "sdxl-base")
    make_tiny_sdxl(folder / "sdxl-refiner", refiner=True)
    make_tiny_upscaler(folder / "stabilityai/stable-diffusion-x4-upscaler")
    single = folder / "dreamshaper_8.safetensors"
    assert main(["convert", str(make_tiny_model(folder / "tmp-sd1")), str(single)]) == 0
    shutil.rmtree(folder / "tmp-sd1")
    shutil.copy(single, folder / "my-model.safetensors")
    width = json.loads((ROOT / "checkpoints/emoji/text_encoder/config.json").read_text())["hidden_size"]
    save_file({"emb_params": torch.randn(2, width)}, folder / "easyneg.safetensors")  # A1111 embedding
    make_control_standins(folder, folder / "path/to/sd15")


def write_emoji_subset(path: Path) -> None:
    """Unicode's emoji-test.txt cut to every 20th emoji plus the names the docs draw (where the
    system has the file; build-emoji names it missing otherwise, as for a user)."""
    from latentdiff.training.emoji.evaluate import GRID_PROMPTS
    from latentdiff.training.emoji.names import DEFAULT_EMOJI_TEST

    if not DEFAULT_EMOJI_TEST.is_file():
        return
    keep, k = [], 0
    for line in DEFAULT_EMOJI_TEST.read_text(encoding="utf-8").splitlines():
        entry = "; fully-qualified" in line
        k += entry
        if not entry or k % 20 == 0 or re.sub(r".*# \S+ E\d+\.\d+ ", "", line) in GRID_PROMPTS:
            keep.append(line)
    path.write_text("\n".join(keep) + "\n", encoding="utf-8")


def make_fast_sd(out: Path) -> None:
    """A tiny SD1 whose UNet attends only at a quarter of the latent size and whose VAE has no
    attention: the docs' 512 px commands take seconds (the plain tiny model attends over 4,096
    latent pixels there)."""
    from latentdiff.models.build import build_components
    from latentdiff.models.components import save_components
    from latentdiff.models.testing import WORDS, tiny_arch

    arch = tiny_arch("sd1")
    arch["unet"].update(
        block_out_channels=(32, 32, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    )
    arch["vae"]["mid_block_add_attention"] = False
    c = build_components(arch, WORDS, seed=0)
    save_components(c, out, c.scheduler_config["_class_name"])


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A folder like a fresh clone's root: the repository's configs, docs and examples (copies, since
    some commands write there) and the stand-ins."""
    import shutil

    folder = tmp_path_factory.mktemp("clone")
    for name in ("configs", "docs", "examples", "checkpoints"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, folder / name)
    make_standins(folder)
    return folder


def run_documented(command: str, cwd: Path) -> tuple[int, str]:
    """Run a documented command in `cwd`: latentdiff in this process, `python ...` as a process."""
    import contextlib
    import io
    import subprocess
    import sys

    from latentdiff.cli.main import main

    words = shlex.split(command)
    if words[0] == "python":
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        r = subprocess.run([sys.executable, *words[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        return r.returncode, (r.stderr.strip().splitlines() or [""])[-1:]
    err = io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(reduced(command, latentdiff_argv(command)))
            except SystemExit as e:  # --help
                code = e.code
    finally:
        os.chdir(old)
    return code, err.getvalue().strip().splitlines()[-1:] or [""]


@pytest.mark.slow
@pytest.mark.parametrize("doc", [str(p.relative_to(ROOT)) for p in DOC_FILES])
def test_documented_commands_run(doc, sandbox, monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    failures, ran = [], []
    for command in doc_commands(ROOT / doc):
        argv = latentdiff_argv(command) or (shlex.split(command) if command.startswith("python ") else None)
        if not_run_reason(command) or argv is None or has_placeholder(argv):
            continue  # not run here (see NOT_RUN), or a syntax line (parsed above)
        start = time.perf_counter()
        code, last = run_documented(command, sandbox)
        ran.append(f"{time.perf_counter() - start:6.1f} s  {command}")
        print(ran[-1], flush=True)  # with -s: each command's time as it ends
        if code != 0:
            failures.append(f"`{command}` exited {code}: {last[0]}")
    assert not failures, f"{doc}: documented commands that fail as written:\n" + "\n".join(failures)


def test_every_command_not_run_has_a_reason():
    """A fenced command that is not a latentdiff command must be named in NOT_RUN (why it is not run)."""
    unexplained = [
        (doc, c)
        for doc, c in documented()
        if latentdiff_argv(c) is None and not_run_reason(c) is None and not c.startswith("python ")
    ]
    assert not unexplained, unexplained
