"""Fuzzing the CLI's text and file inputs (issue 24), family by family: numbers at and past their
bounds (every number flag of every command), non-UTF-8 and NUL in argv, prompt files of any bytes and
special files, YAML configs and mapping flags nesting deep or expanding through aliases, --from PNGs
truncated, oversized, damaged or holding deep JSON, and A1111 parameter lines of any shape. Each case
runs inside `memory_cap` and ends in a value within bounds or one UsageError line (exit 2).
Derandomized (CI repeats the same cases); the known cases are in test_cli_files.py."""

import argparse
import contextlib
import io
import json
import os
import re
import tempfile
import zlib
from pathlib import Path

import pytest
from a1111_files import exif_block, jpeg_with, webp_with
from helpers import COMFY_GRAPH, memory_cap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from latentdiff.cli.main import _parsed, build_parser, main
from latentdiff.config.flag_types import INT_MAX, INT_MIN, REAL_MAX
from latentdiff.config.flags import MAX_PROMPTS, read_prompts_file
from latentdiff.config.generate import GenerateConfig
from latentdiff.errors import UsageError
from latentdiff.images.infotext import params_from_a1111
from latentdiff.images.write import read_params
from latentdiff.training.config import FinetuneConfig
from latentdiff.training.recipe import build_config
from latentdiff.workflows.options import ImageOptions

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
CAP = 2**30  # more than any refused input may take; an unbounded read or expansion hits it


def one_line(e: Exception) -> str:
    text = str(e)
    assert text and "\n" not in text, text
    return text


def parse(parser, argv: list[str]):
    """(namespace or None, the error line) of `argv` through the CLI's parser."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        args = _parsed(parser, argv)
    if isinstance(args, int):
        lines = err.getvalue().strip().splitlines()
        assert args == 2 and len(lines) == 1 and lines[0].startswith("latentdiff: error: "), err.getvalue()
        return None, lines[0]
    return args, ""


# ---- numbers: every int/float flag of every command ---------------------------------------------------

PARSER = build_parser()
COMMANDS = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices


def _required(parser) -> list[str]:
    """Stand-ins for a command's required arguments, so only the fuzzed flag can be refused."""
    argv = []
    for a in parser._actions:
        if a.required:
            argv += [a.option_strings[0], "x"] if a.option_strings else ["x"]
    return argv


NUMBER_FLAGS = sorted(
    (command, action.option_strings[0], action.dest, action.type.__name__)
    for command, parser in COMMANDS.items()
    for action in parser._actions
    if action.option_strings and getattr(action.type, "__name__", "") in ("int", "float")
)
EDGES = [str(n) for n in (INT_MAX, INT_MAX + 1, INT_MIN, INT_MIN - 1, 2**53, 2**53 + 1, 0, 1, -1)]
EDGES += ["1e15", "1e16", "1e308", "1e309", "-1e309", "5e-324", "nan", "NaN", "+inf", "-Infinity", "1_000"]
EDGES += ["٣", "１", " 7 ", "0x10", "1e", ".", "", "-", "9" * 65, "9" * 5000, "1.5", "-0.0", "١e2"]
number_text = (
    st.sampled_from(EDGES)
    | st.integers(-(2**70), 2**70).map(str)
    | st.floats().map(repr)
    | st.text("0123456789+-.eE_xnaif ", max_size=12)
)


def test_number_flags_cover_every_command():
    assert len(NUMBER_FLAGS) >= 60
    assert {c for c, *_ in NUMBER_FLAGS} >= {
        "generate",
        "upscale",
        "finetune",
        "train-vae",
        "train-clip",
        "serve",
        "export",
    }


@settings(FUZZ, max_examples=400)
@given(flag=st.sampled_from(NUMBER_FLAGS), value=number_text)
def test_fuzz_number_flags(flag, value):
    command, name, dest, kind = flag
    with memory_cap(CAP):
        args, line = parse(PARSER, [command, *_required(COMMANDS[command]), f"{name}={value}"])
    if args is None:
        # argparse names a flag with aliases by all its names: "--padding/--only-masked-padding must be"
        assert re.match(rf"latentdiff: error: {re.escape(name)}(/--[\w-]+)* must be ", line), line
    else:  # a repeatable flag (one per control unit) holds a list of them
        got = getattr(args, dest)
        for x in got if isinstance(got, list) else [got]:
            if kind == "int":
                assert type(x) is int and INT_MIN <= x <= INT_MAX
            else:
                assert type(x) is float and abs(x) <= REAL_MAX


# ---- argv text: non-UTF-8 bytes (surrogates, as Python decodes argv) and NUL -------------------------------

TEXT_FLAGS = ["prompt", "--negative", "--out", "--model", "--scheduler", "--init-image", "--vae", "--prompts"]
bad_char = st.sampled_from(["\0", "\udcff", "\udc80", "\udce9", "\ud800"])


@settings(FUZZ, max_examples=150)
@given(flag=st.sampled_from(TEXT_FLAGS), head=st.text(max_size=8), bad=bad_char, tail=st.text(max_size=8))
def test_fuzz_argv_text(flag, head, bad, tail):
    value = head + bad + tail
    argv = ["generate", value] if flag == "prompt" else ["generate", "x", flag, value]
    with memory_cap(CAP):
        args, line = parse(PARSER, argv)
    assert args is None and line.startswith(f"latentdiff: error: {flag} "), line
    assert ("NUL" in line) == ("\0" in value)


@settings(FUZZ, max_examples=40)
@given(flag=st.sampled_from(TEXT_FLAGS[:3]), bad=bad_char, tail=st.text(max_size=8))
def test_fuzz_argv_text_through_main(capsys, flag, bad, tail):
    """The same through `main`: one line, exit 2, nothing run."""
    argv = ["generate", bad + tail] if flag == "prompt" else ["generate", "x", flag, bad + tail]
    with memory_cap(CAP):
        assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"latentdiff: error: {flag} ") and len(err.splitlines()) == 1


# ---- prompt files: any bytes, special files, oversized ---------------------------------------------------

line_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)
prompt_bytes = (
    st.binary(max_size=300)
    | st.lists(line_text, max_size=20).map(lambda lines: "\n".join(lines).encode())
    | st.lists(line_text, max_size=20).map(lambda lines: "\r\n".join(lines).encode("utf-8-sig"))
    | st.integers(MAX_PROMPTS - 2, MAX_PROMPTS + 2).map(lambda n: b"a\n" * n)
    | st.sampled_from([b"\xff", b"a\0b", b"\xef\xbb\xbf", b"#\n", b"\n\n", "é".encode("latin-1")])
)


def special(kind: str, folder: Path) -> str:
    if kind == "fifo":
        os.mkfifo(folder / "fifo")
        return str(folder / "fifo")
    if kind == "sparse":  # an oversized file that costs no disk
        with open(folder / "big", "wb") as f:
            f.truncate(16 * 2**20 + 1)
        return str(folder / "big")
    return {"folder": str(folder), "device": "/dev/zero", "missing": str(folder / "nothing")}[kind]


@settings(FUZZ, max_examples=200)
@given(content=prompt_bytes, kind=st.sampled_from(["file"] * 6 + ["fifo", "sparse", "folder", "device", "missing"]))
def test_fuzz_prompts_file(content, kind):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.txt"
        path.write_bytes(content)
        if kind != "file":
            path = special(kind, Path(tmp))
        try:
            with memory_cap(CAP):
                prompts = read_prompts_file(str(path))
        except UsageError as e:
            assert str(e).startswith(f"--prompts file {path} ") and one_line(e)
        else:
            assert kind == "file" and 1 <= len(prompts) <= MAX_PROMPTS
            assert all(p and p == p.strip() and "\0" not in p and not p.startswith("#") for p in prompts)


# ---- YAML: --config files and mapping flags ----------------------------------------------------------------

scalar = st.sampled_from(["1", "-1", "nan", ".nan", ".inf", "-.inf", "1e999", "9" * 400, "'x'", "~", "true", "[]"])
scalar = scalar | st.sampled_from(["!!python/object:os.system x", "&a 1", "*a", '"\\0"', '"\\udcff"', "{", "]"])


@st.composite
def yaml_text(draw) -> bytes:
    key = draw(st.sampled_from(["max_steps", "lr", "sample_defaults", "validation_prompts", "seed", "x", "1", "~"]))
    depth = draw(st.integers(0, 45))
    value = "[" * depth + draw(scalar) + "]" * depth if draw(st.booleans()) else "{a: " * depth + "1" + "}" * depth
    lines = [f"{key}: {value}"]
    if draw(st.booleans()):  # aliases fanning out: 9**levels values once expanded
        levels, fan = draw(st.integers(1, 8)), draw(st.integers(2, 9))
        lines += ["l0: &l0 [" + ",".join(["x"] * fan) + "]"]
        lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * fan) + "]" for i in range(1, levels)]
    if draw(st.booleans()):  # block nesting, without brackets
        n = draw(st.integers(1, 40))
        lines += [f"{'  ' * i}b{i}:" for i in range(n)] + [f"{'  ' * n}z: 1"]
    text = "\n".join(lines).encode()
    return text + draw(st.sampled_from([b"", b"\n", b"\xff", b"\0", b"\n\t: :"]))


@settings(FUZZ, max_examples=150)
@given(text=yaml_text())
def test_fuzz_config_yaml(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_bytes(text)
        try:
            with memory_cap(CAP):
                build_config(FinetuneConfig, str(path), {"dataset": "d", "out": "o", "model": "m"})
        except UsageError as e:
            one_line(e)


@settings(FUZZ, max_examples=100)
@given(text=yaml_text().map(lambda b: b.decode("utf-8", "surrogateescape").replace("\n", ", ")))
def test_fuzz_mapping_flag(text):
    with memory_cap(CAP):
        args, line = parse(PARSER, ["finetune", "ds", "--sample-defaults", "{" + text + "}"])
    assert args is not None and isinstance(args.sample_defaults, dict) or "--sample-defaults" in line, line


# ---- --from PNGs: text chunks of any shape, truncated, damaged -----------------------------------------------

numbers = st.sampled_from(["inf", "-inf", "nan", "1e400", "9" * 5000, "-1", "0", "1.5", "٣", "", "2", str(2**64)])


@st.composite
def a1111_line(draw) -> str:
    fields = {"Steps": "2", "Sampler": "Euler a", "CFG scale": "7", "Seed": "1", "Size": "32x32", "Clip skip": "1"}
    # the hires fix, img2img strength, sampler options and VAE (images/a1111_read.py), some of the time
    more = {"Denoising strength": "0.5", "Hires upscale": "2", "Hires steps": "3", "Hires resize": "64x0"}
    more |= {"Hires upscaler": "Latent (bicubic)", "Eta DDIM": "0.3", "Sigma noise": "1", "VAE": "v.pt", "ENSD": "1"}
    fields |= {k: more[k] for k in draw(st.sets(st.sampled_from(sorted(more)), max_size=4))}
    if draw(st.booleans()):
        fields["Sampler"] = draw(st.sampled_from(["DDIM", "Euler", "DPM++ SDE Karras", "x"]))
    for key in draw(st.sets(st.sampled_from(sorted(fields)), max_size=3)):
        sized = key in ("Size", "Hires resize")
        fields[key] = draw(numbers) if not sized else f"{draw(numbers)}x{draw(numbers)}"
    junk = st.sampled_from(['"', "\\", ":", ",", " ", "<lora:", ">", "\n", "Negative prompt:", "a", "x:1"])
    extra = "".join(draw(st.lists(junk, max_size=30)))
    return f"a cat{extra}\n" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + extra


json_text = (
    st.integers(0, 5000).map(lambda d: "[" * d + "]" * d)
    | st.integers(0, 60).map(lambda d: '{"prompt": "x", "steps": ' + "[" * d + "1" + "]" * d + "}")
    | st.sampled_from(['{"prompt": "x"}', '{"prompt": "a \\udcff"}', '{"prompt": "\\u0000"}', "{", "null"])
    | st.sampled_from(['{"prompt": "x", "seed": 1e400}', '{"prompt": "x", "steps": ' + "9" * 5000 + "}"])
)


# ComfyUI API graphs: its default graph with nodes dropped, retyped, linked anywhere, given junk inputs.
_COMFY_JUNK = st.sampled_from(
    [
        None,
        "",
        "x",
        -1,
        0,
        2**70,
        1e400,
        0.5,
        True,
        [],
        ["9", 0],
        ["3", 0],
        ["99", 0],
        ["4", 7],
        [["4"], 0],
        {},
        "euler",
    ]
)


@st.composite
def comfy_graph(draw) -> str:
    graph = json.loads(json.dumps(COMFY_GRAPH))
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(sorted(graph) + ["10"]))
        action = draw(st.sampled_from(["drop", "retype", "input", "input", "node"]))
        if action == "drop":
            graph.pop(key, None)
        elif action == "retype" and isinstance(graph.get(key), dict):
            graph[key]["class_type"] = draw(
                st.sampled_from(["KSamplerAdvanced", "LoraLoader", "VAELoader", "Upscale", 3])
            )
        elif action == "input" and isinstance(graph.get(key), dict):
            name = draw(st.sampled_from(sorted(graph[key]["inputs"]) + ["model", "clip", "vae", "lora_name"]))
            graph[key]["inputs"][name] = draw(_COMFY_JUNK)
        else:
            graph[key] = draw(_COMFY_JUNK)
    return json.dumps(graph)


def chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


@st.composite
def png_bytes(draw) -> bytes:
    key = draw(st.sampled_from([b"latentdiff", b"parameters", b"prompt", b"workflow", b"other"]))
    texts = {b"latentdiff": json_text, b"prompt": comfy_graph() | json_text}
    text = draw(texts.get(key, a1111_line())).encode("utf-8", "surrogatepass")
    kind = draw(st.sampled_from([b"tEXt", b"iTXt", b"zTXt", b"iTXt-z"]))
    body = {
        b"tEXt": key + b"\0" + text,
        b"zTXt": key + b"\0\0" + zlib.compress(text),
        b"iTXt": key + b"\0\0\0\0\0" + text,
        b"iTXt-z": key + b"\0\1\0\0\0" + zlib.compress(text),
    }[kind]
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    data = buf.getvalue()
    data = data[:33] + chunk(kind[:4], body) + data[33:]
    cut = draw(st.sampled_from([None, None, None, "truncate", "flip", "length"]))
    if cut == "length":  # a chunk claiming gigabytes
        return data[:33] + b"\x7f\xff\xff\xff" + data[37:]
    return damaged(draw, data, cut)


@settings(FUZZ, max_examples=250)
@given(data=png_bytes())
def test_fuzz_from_png(data):
    from_file_or_one_line(data, "in.png")


def damaged(draw, data: bytes, cut) -> bytes:
    """`data` cut short or with one byte flipped at a drawn place (cut None: as it is)."""
    at = draw(st.integers(0, len(data) - 1))
    if cut == "truncate":
        return data[:at]
    if cut == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    return data


def from_file_or_one_line(data: bytes, name: str) -> None:
    """--from a file holding `data`: its parameters checked as generate checks them, or one line."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            with memory_cap(CAP):
                params = read_params(path)
                cfg = GenerateConfig.from_flags({"from_image": str(path), "model": "m"}, params)[0]
                ImageOptions.from_kwargs(cfg.image_options)  # the hires and img2img values are checked here
        except UsageError as e:
            one_line(e)


@st.composite
def exif_file(draw) -> bytes:
    """A JPEG or WebP with a UserComment of any prefix, encoding and length, maybe truncated or flipped."""
    text = draw(a1111_line())
    prefix = draw(st.sampled_from([b"UNICODE\0", b"ASCII\0\0\0", b"\0" * 8, b"JIS\0\0\0\0\0", b"BOGUS\0\0\0", b""]))
    body = draw(
        st.sampled_from(
            [
                text.encode("utf-16-be", "surrogatepass"),
                text.encode("utf-16", "surrogatepass"),
                text.encode("utf-8", "surrogatepass"),
                text.encode("utf-16-be", "surrogatepass")[:-1],
                b"\xd8\x00" * 3,
            ]
        )
    )
    block = exif_block(prefix + body)
    data = draw(st.sampled_from([jpeg_with, webp_with]))(block)
    return damaged(draw, data, draw(st.sampled_from([None, None, "truncate", "flip"])))


@settings(FUZZ, max_examples=200)
@given(data=exif_file())
def test_fuzz_from_jpeg_and_webp_exif(data):
    """--from a JPEG or WebP: the parameters, or one line; never an exception of Pillow's or a decoder's."""
    from_file_or_one_line(data, "in.img")


@settings(FUZZ, max_examples=150)
@given(line=a1111_line(), times=st.integers(1, 20))
def test_fuzz_a1111_lines(line, times):
    """Never an exception from the parser itself; the checks then take or refuse its values."""
    params, notes = params_from_a1111(line * times)
    assert isinstance(params["prompt"], str) and all("\n" not in n for n in notes)
    try:
        cfg = GenerateConfig.from_flags({"from_image": "the image", "model": "m"}, params)[0]
        ImageOptions.from_kwargs(cfg.image_options)
    except UsageError as e:
        one_line(e)


@settings(FUZZ, max_examples=300)
@given(st.lists(st.sampled_from(["BREAK", " ", "\n", "\t", "\u3000", "a", "_", "!", "BREAKx", "xBREAK"]), max_size=12))
def test_fuzz_break_split_is_the_expression(tokens):
    """The linear BREAK split gives what the quadratic expression it replaced gave."""
    import re

    from latentdiff.prompts.syntax import _split_break

    text = "".join(tokens)
    assert _split_break(text) == re.split(r"\s*\bBREAK\b\s*", text)


@pytest.mark.parametrize("kind", ["fifo", "sparse", "folder", "device", "missing"])
def test_from_special_files(kind, tmp_path):
    path = special(kind, tmp_path)
    with memory_cap(CAP), pytest.raises(UsageError) as e:
        read_params(path)
    assert one_line(e.value).startswith(f"--from image {path} ")


def test_depth_of_params_json_is_bounded(tmp_path):
    """What --from reads is bounded before json.loads sees it (no RecursionError at 100,000 levels)."""
    path = tmp_path / "deep.png"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    body = b"latentdiff\0\0\0\0\0" + json.dumps({"prompt": "x"}).encode()[:-1] + b', "a": ' + b"[" * 100_000 + b"}"
    path.write_bytes(buf.getvalue()[:33] + chunk(b"iTXt", body) + buf.getvalue()[33:])
    with pytest.raises(UsageError, match="nests 100001 levels deep"):
        read_params(path)
