"""Issue 24, the CLI's text and files: --prompts, --config and the list/mapping flags, --from PNGs
(latentdiff's JSON and A1111's line), argv that is not UTF-8 or holds NUL, every number flag of every
command, the image flags. Each case ends at once in one line and exit 2, inside a memory cap, and
within seconds (a hang fails the test instead of stalling the suite). Fuzzing: test_fuzz_files.py."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import zlib

import pytest
from helpers import memory_cap
from PIL import Image, PngImagePlugin

from latentdiff.cli.main import main
from latentdiff.config.flags import MAX_PROMPTS, read_prompts_file
from latentdiff.errors import UsageError
from latentdiff.images.infotext import params_from_a1111

MiB = 2**20


class Hung(BaseException):
    """Raised by `within` (not an Exception: nothing on the way may catch it)."""


@contextlib.contextmanager
def within(seconds: int):
    def alarm(signum, frame):
        raise Hung(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def refused(capsys, *argv, code=2, seconds=10) -> str:
    """Run `latentdiff ARGV` in-process, bounded in time and memory: exit `code`, one line."""
    with within(seconds), memory_cap(MiB * 1024):
        got = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert got == code, err
    assert out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("latentdiff: error: ")
    return err.strip()


@pytest.fixture
def bad_files(tmp_path):
    """{kind: (path, what the refusal says)}: files no text input may read."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    huge = tmp_path / "huge.txt"
    huge.touch()
    os.truncate(huge, 17 * MiB)  # sparse: costs no disk
    (tmp_path / "latin1.txt").write_bytes(b"red \xff apple\n")
    (tmp_path / "nul.txt").write_bytes(b"red\0apple\n")
    return {
        "fifo": (tmp_path / "fifo", "is a FIFO (named pipe); give a regular file"),
        "folder": (tmp_path / "folder", "is a folder"),
        "device": ("/dev/zero", "is a character device"),
        "huge": (huge, "is 17.0 MiB; at most"),
        "latin1": (tmp_path / "latin1.txt", "is not UTF-8 text (byte 4 is 0xff)"),
        "nul": (tmp_path / "nul.txt", "holds a NUL byte"),
    }


KINDS = ["fifo", "folder", "device", "huge", "latin1", "nul"]


# ---- --prompts FILE, the list flags, --config YAML, mapping flags ----------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_prompts_file_that_cannot_be_text(bad_files, capsys, kind):
    path, says = bad_files[kind]
    line = refused(capsys, "generate", "--prompts", path)
    assert f"--prompts file {path} {says}" in line and (kind != "huge" or "at most 16.0 MiB is read" in line)


def test_too_many_prompts(tmp_path, capsys):
    path = tmp_path / "p.txt"
    path.write_text("a cat\n" * (MAX_PROMPTS + 1))
    assert "holds 10,001 prompts; at most 10,000 are rendered in one run" in refused(
        capsys, "generate", "--prompts", path
    )
    path.write_text("# header\n" + "a cat\n" * MAX_PROMPTS)
    assert len(read_prompts_file(str(path))) == MAX_PROMPTS


@pytest.mark.parametrize("kind", KINDS)
def test_list_flag_file_that_cannot_be_text(bad_files, capsys, kind):
    path, says = bad_files[kind]
    line = refused(capsys, "finetune", "ds", "--validation-prompts", path)
    assert f"--validation-prompts file {path} {says}" in line


def yaml_files(tmp_path) -> dict:
    deep = tmp_path / "deep.yaml"
    deep.write_text("max_steps: " + "[" * 60 + "]" * 60 + "\n")
    block = tmp_path / "block.yaml"  # block style nests without brackets
    block.write_text("".join(f"{'  ' * i}k{i}:\n" for i in range(40)) + f"{'  ' * 40}x: 1\n")
    bomb = tmp_path / "bomb.yaml"  # 9**8 strings once its aliases are expanded
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 8)]
    bomb.write_text("\n".join(lines) + "\n")
    return {
        deep: "nests 60 levels deep; at most 32 are read",
        block: "nests more than 32 levels deep",
        bomb: "holds more than 1,000,000 values with its aliases expanded",
    }


@pytest.mark.parametrize("command", ["finetune", "train-vae", "train-clip"])
def test_config_yaml_bounded(bad_files, tmp_path, capsys, command):
    cases = {path: says for path, says in bad_files.values()}
    cases.update(yaml_files(tmp_path))
    for path, says in cases.items():
        line = refused(capsys, command, tmp_path / "ds", "--out", tmp_path / "o", "--config", path)
        assert f"config file {path} {says}" in line


def test_mapping_flag_bounded(tmp_path, capsys):
    for text, says in [
        ("[" * 40 + "]" * 40, "--sample-defaults value nests 40 levels deep"),
        ("{a: " * 40 + "1" + "}" * 40, "--sample-defaults value nests 40 levels deep"),
        ("{steps: 20, x: '" + "y" * 70_000 + "'}", "--sample-defaults is 70,018 characters long; at most 65,536"),
        ("[1, 2]", "--sample-defaults must be a YAML mapping like '{steps: 20}'"),
    ]:
        assert says in refused(capsys, "finetune", "ds", "--sample-defaults", text)


# ---- --from PNG -----------------------------------------------------------------------------------------


def png_with(path, chunks: list[tuple[bytes, bytes]], size=(8, 8)):
    """A PNG with these raw (type, data) chunks inserted after IHDR."""
    Image.new("RGB", size).save(path)
    data = path.read_bytes()
    extra = b"".join(
        len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big") for kind, body in chunks
    )
    path.write_bytes(data[:33] + extra + data[33:])  # signature (8) + IHDR (25)
    return path


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_from_a_special_file(bad_files, capsys, kind):
    path, says = bad_files[kind]
    assert f"--from image {path} {says}" in refused(capsys, "generate", "--from", path)


def test_from_truncated_damaged_and_oversized_pngs(tmp_path, capsys):
    good = png_with(tmp_path / "good.png", [(b"iTXt", b"latentdiff\0\0\0\0\0" + json.dumps({"prompt": "x"}).encode())])
    data = good.read_bytes()
    cases = {
        "truncated.png": (data[:-30], "the file is truncated"),
        "no-end.png": (data[:-12], "the file is truncated (it ends before the PNG's end marker)"),
        "crc.png": (data[:60] + bytes([data[60] ^ 1]) + data[61:], "its 'latentdiff' text is damaged (CRC mismatch)"),
        "text.txt": (b"not a png at all", "it is not a PNG, JPEG or WebP file"),
    }
    for name, (content, says) in cases.items():
        (tmp_path / name).write_bytes(content)
        assert f"--from image {tmp_path / name} cannot be read: {says}" in refused(
            capsys, "generate", "--from", tmp_path / name
        )
    big = png_with(tmp_path / "big.png", [(b"tEXt", b"parameters\0" + b"a" * (2 * MiB))])
    assert "its 'parameters' text is 2.0 MiB; at most 1.0 MiB is read" in refused(capsys, "generate", "--from", big)
    bomb = png_with(tmp_path / "zbomb.png", [(b"zTXt", b"latentdiff\0\0" + zlib.compress(b" " * (64 * MiB), 9))])
    assert "a compressed text chunk inflates past 1.0 MiB" in refused(capsys, "generate", "--from", bomb)


def test_from_deeply_nested_metadata(tmp_path, capsys):
    for text in ["[" * 100_000 + "]" * 100_000, '{"prompt": "x", "loras": ' + "[" * 40 + "]" * 40 + "}"]:
        png = png_with(tmp_path / "deep.png", [(b"iTXt", b"latentdiff\0\0\0\0\0" + text.encode())])
        line = refused(capsys, "generate", "--from", png)
        assert f"--from image {png}: its latentdiff metadata nests" in line and "at most 32 are read" in line


def test_from_metadata_with_a_lone_surrogate(tmp_path, capsys):
    png = png_with(tmp_path / "s.png", [(b"iTXt", b'latentdiff\0\0\0\0\0{"prompt": "a \\udcff b", "steps": 1}')])
    assert "the prompt recorded in" in refused(capsys, "generate", "--from", png)


A1111 = {"Steps": "2", "Sampler": "Euler a", "CFG scale": "7", "Seed": "1", "Size": "32x32", "Clip skip": "2"}


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("Steps", "inf", "the steps recorded in {png} must be a whole number, got inf"),
        ("Steps", "1.5", "the steps recorded in {png} must be a whole number, got 1.5"),
        ("Steps", "9" * 5000, "the steps recorded in {png} must be a whole number, got '9999999"),
        ("Seed", "1e400", "the seed recorded in {png} must be a whole number, got inf"),
        ("Seed", str(2**64), "the seed recorded in {png} must be <= 9223372036854775807"),
        ("Seed", "-1", "the seed recorded in {png} must be >= 0"),
        ("CFG scale", "nan", "the guidance recorded in {png} must be a finite number, got nan"),
        ("CFG scale", "-inf", "the guidance recorded in {png} must be a finite number, got -inf"),
        ("Clip skip", "1e308", "the clip_skip recorded in {png} must be <= 64"),
        ("Size", "9" * 5000 + "x512", "the width recorded in {png} must be a whole number, got '9999999"),
        ("Size", "32xnan", "the height recorded in {png} must be a whole number, got nan"),
        ("Size", "32x٣٢", "the height recorded in {png} must be a whole number, got '٣٢'"),
    ],
)
def test_a1111_numbers(tmp_path, capsys, field, value, says):
    png = tmp_path / "a1111.png"
    line = ", ".join(f"{k}: {value if k == field else v}" for k, v in A1111.items())
    png_with(png, [(b"iTXt", b"parameters\0\0\0\0\0" + f"a cat\n{line}".encode())])
    assert says.format(png=png) in refused(capsys, "generate", "--from", png)


@pytest.mark.parametrize(
    "line",
    [
        "a" * MiB,  # no colon: A1111's expression tried every start and scanned to the end (quadratic)
        "ab " * (MiB // 3),
        "a:" * (MiB // 2),
        'k: "' * (MiB // 4),
        'k: "\\' * (MiB // 5),
        "Steps: 1, " + "Seed:" * (MiB // 5),
        "<lora:a:" * (MiB // 8),
        "<" * MiB,
        "(" * MiB,
    ],
    ids=lambda line: line[:8],
)
def test_a1111_parser_is_linear(line):
    start = time.perf_counter()
    with within(10):
        params_from_a1111(f"prompt {line}\nNegative prompt: {line}\n{line}")
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    "prompt",
    ["a" + " " * MiB + "b", ("BREAK" + " " * 1000) * 1000, " \t" * (MiB // 2) + "BREAK"],
    ids=["spaces", "breaks", "tabs"],
)
def test_prompt_syntax_is_linear(prompt):
    """A long run of spaces took the BREAK expression 3.6 s per 10,000 and 8 minutes per 100,000."""
    from latentdiff.prompts.syntax import parse

    start = time.perf_counter()
    with within(10):
        parse(prompt)
    assert time.perf_counter() - start < 2.0


# ---- argv -----------------------------------------------------------------------------------------------


def test_argv_bytes_that_are_not_utf8(tmp_path):
    """The real command line: Python hands undecodable argv bytes over as surrogates."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for argv, says in [
        ([b"red \xff apple"], "prompt is not UTF-8 text (byte 0xff at character 4)"),
        ([b"x", b"--negative", b"\xe9t\xe9"], "--negative is not UTF-8 text (byte 0xe9 at character 0)"),
        ([b"x", b"--init-image", b"caf\xe9.png"], "--init-image is not UTF-8 text (byte 0xe9 at character 3)"),
    ]:
        r = subprocess.run(
            [sys.executable, "-m", "latentdiff.cli", "generate", *argv, "--out", str(tmp_path / "o")],
            capture_output=True,
            env=env,
            timeout=120,
        )
        err = r.stderr.decode("utf-8", "replace").strip()
        assert r.returncode == 2 and err.splitlines() == [f"latentdiff: error: {says}"], err


@pytest.mark.parametrize(
    "argv, says",
    [
        (["generate", "red\0apple"], "prompt holds a NUL character (at character 3)"),
        (["generate", "x", "--out", "o\0"], "--out holds a NUL character"),
        (["generate", "x", "--model", "\udce9"], "--model is not UTF-8 text (byte 0xe9 at character 0)"),
        (["upscale", "a\0.png", "--model", "m"], "image holds a NUL character"),
        (["finetune", "ds", "--output-name", "a\0b"], "--output-name holds a NUL character"),
        (["serve", "--token", "\udcff"], "--token is not UTF-8 text"),
    ],
)
def test_argv_with_nul_or_surrogates(capsys, argv, says):
    assert says in refused(capsys, *argv)


# ---- numbers (every number flag of every command: test_fuzz_files.py) ------------------------------------


@pytest.mark.parametrize(
    "argv, says",
    [
        (["generate", "x", "--strength=nan"], "--strength must be a finite number, got nan"),
        (["upscale", "a.png", "--model", "m", "--noise-level", "1e3"], "--noise-level must be a whole number"),
        (["finetune", "ds", "--lr=-inf"], "--lr must be a finite number, got -inf"),
        (["train-vae", "ds", "--kl-weight", "1e999"], "--kl-weight must be a finite number, got 1e999"),
        (["export", "run", "--out", "o", "--step", str(2**63)], "--step must be <= 9223372036854775807"),
        (["eval-emoji", "ds", "--guidance", "1e300"], "--guidance must be between -2**53 and 2**53, got 1e300"),
        (["serve", "--port", "9" * 5000], "--port must be a whole number, got '999"),
        (["build-emoji", "--size", "٣"], "--size must be a whole number, got '٣'"),
        (["eval-emoji", "ds", "--seeds", "0,1e400"], "--seeds takes whole numbers separated by commas, got '0,1e400'"),
        (["eval-emoji", "ds", "--seeds", f"0,{2**64}"], "--seeds takes seeds from 0 to 9223372036854775807"),
    ],
)
def test_number_flags_of_each_command(capsys, argv, says):
    assert says in refused(capsys, *argv)


@pytest.mark.parametrize(
    "value, says", [("nan", "a finite number, got nan"), ("inf", "a finite number"), ("-1", "> 0 GB")]
)
def test_serve_memory_budget(capsys, value, says):
    assert f"--memory-budget must be {says}" in refused(capsys, "serve", f"--memory-budget={value}")


# ---- image flags ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_image_flags_refuse_special_files(bad_files, tmp_path, capsys, kind):
    path, _ = bad_files[kind]
    Image.new("RGB", (64, 64)).save(tmp_path / "init.png")
    cases = [
        (["generate", "x", "--init-image", path], f"init image {path} is not usable: not a regular file"),
        (["generate", "x", "--init-image", tmp_path / "init.png", "--mask", path], f"mask {path} is not usable"),
        (["upscale", path, "--model", "m"], f"image to upscale {path} is not usable: not a regular file"),
    ]
    for argv, says in cases:
        assert says in refused(capsys, *argv, "--out", tmp_path / "o")


def test_load_image_checks_the_opened_file(tmp_path, monkeypatch):
    """A FIFO swapped in after the path was checked is refused on the opened descriptor, not waited on."""
    from latentdiff.images import read

    os.mkfifo(tmp_path / "fifo")
    real_stat = os.stat
    monkeypatch.setattr(
        read.os, "stat", lambda p, *a, **k: real_stat(tmp_path / "ok.png" if p == tmp_path / "fifo" else p)
    )
    Image.new("RGB", (16, 16)).save(tmp_path / "ok.png")
    with within(5), pytest.raises(read.BadImageError, match="is a FIFO"):
        read.load_image(tmp_path / "fifo")


def test_png_text_api_refuses_in_one_line(tmp_path):
    from latentdiff.images.write import read_params

    with pytest.raises(UsageError) as e:
        read_params(tmp_path / "missing.png")
    assert "\n" not in str(e.value) and "does not exist" in str(e.value)


def test_png_info_pngs_still_read(tmp_path):
    """PNGs as Pillow writes them (tEXt, iTXt, compressed iTXt) read back through the chunk walker."""
    from latentdiff.images.write import read_params

    for name, add in [("t", "add_text"), ("i", "add_itxt"), ("z", "add_itxt_zip")]:
        info = PngImagePlugin.PngInfo()
        if add == "add_itxt_zip":
            info.add_itxt("latentdiff", json.dumps({"prompt": "é"}), zip=True)
        else:
            getattr(info, add)("latentdiff", json.dumps({"prompt": "é"}))
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png", pnginfo=info)
        assert read_params(tmp_path / f"{name}.png")["prompt"] == "é"
