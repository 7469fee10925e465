"""A1111 infotext: sampler names, the line we write, reading lines A1111 wrote, --from an A1111 PNG."""

import hashlib

import pytest
from PIL import Image, PngImagePlugin

from latentdiff.images.infotext import A1111_SAMPLERS, params_from_a1111, parse_infotext
from latentdiff.models.fingerprint import model_hash, short_hash
from latentdiff.sampling.loop import SCHEDULERS, check_scheduler_name

A1111_TEXT = """masterpiece, (best quality:1.2), a cat <lora:add_detail:0.7>
Negative prompt: lowres, bad anatomy
Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567890, Size: 48x32, \
Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.9.4"""


def test_every_scheduler_has_an_a1111_name_and_both_names_are_accepted():
    assert set(A1111_SAMPLERS) == set(SCHEDULERS)
    for ours, theirs in A1111_SAMPLERS.items():
        assert (
            check_scheduler_name(theirs) == check_scheduler_name(theirs.upper()) == check_scheduler_name(ours) == ours
        )


def test_parse_an_a1111_line():
    prompt, negative, fields = parse_infotext(A1111_TEXT)
    assert prompt == "masterpiece, (best quality:1.2), a cat <lora:add_detail:0.7>"
    assert negative == "lowres, bad anatomy"
    assert fields["Lora hashes"] == "add_detail: 7c6bad76eb54" and fields["Version"] == "v1.9.4"
    params, notes = params_from_a1111(A1111_TEXT)
    assert params == {
        "prompt": "masterpiece, (best quality:1.2), a cat <lora:add_detail:0.7>",  # --lora-dir reads it
        "negative_prompt": "lowres, bad anatomy",
        "prompt_syntax": "a1111",
        "steps": 28,
        "guidance": 6.5,
        "seed": 1234567890,
        "clip_skip": 2,
        "width": 48,
        "height": 32,
        "scheduler": "dpm++2m_karras",
        "a1111_model_hash": "6ce0161689",
        "rng": "nv",  # A1111's default GPU noise, its numbers on any device: A1111's own path (issue 26.5)
    }
    assert "GPU" in notes[0] and not any("ignored" in n or "not honoured" in n for n in notes)


def test_a_prompt_without_parameters_and_an_unknown_sampler():
    params, _ = params_from_a1111("just a prompt\nover two lines")
    assert params["prompt"] == "just a prompt\nover two lines" and "steps" not in params
    params, notes = params_from_a1111("x\nSteps: 5, Sampler: DPM adaptive, CFG scale: 7, Seed: 1")
    assert params["scheduler"] is None and any("DPM adaptive" in n for n in notes)


# A1111 1.10 writes the schedule type apart ("Sampler: DPM++ 2M, Schedule type: Karras"); so do we.
@pytest.mark.parametrize(
    "scheduler, sampler, schedule",
    [(None, "PLMS", None), ("dpm++2m_karras", "DPM++ 2M", "Karras"), ("euler_a", "Euler a", None)],
)
def test_our_line_reads_back_as_a1111_would(pipe_sd1, scheduler, sampler, schedule):
    im = pipe_sd1(
        "a (red:1.2) apple, on a table",
        negative_prompt="blurry, dark",
        steps=2,
        seed=5,
        scheduler=scheduler,
        clip_skip=2,
    )[0]
    prompt, negative, fields = parse_infotext(im.info["parameters"])
    assert (prompt, negative) == ("a (red:1.2) apple, on a table", "blurry, dark")
    assert fields["Sampler"] == sampler and fields.get("Schedule type") == schedule
    assert fields["Model hash"] == pipe_sd1.model_hash and len(fields["Model hash"]) == 12
    assert (fields["Steps"], fields["Seed"], fields["Size"], fields["Clip skip"]) == ("2", "5", "64x64", "2")
    assert fields["Model"] == pipe_sd1.model_dir.name
    params, _ = params_from_a1111(im.info["parameters"])
    assert params["scheduler"] == (scheduler or "pndm")


def test_hashes_a1111_and_civitai_use(tmp_path):
    import torch
    from safetensors.torch import save_file

    f = tmp_path / "m.safetensors"
    save_file({"w": torch.arange(6.0)}, f, metadata={"a": "1"})
    assert model_hash(f) == hashlib.sha256(f.read_bytes()).hexdigest()[:10]
    first = short_hash(f)
    save_file({"w": torch.arange(6.0)}, f, metadata={"a": "a longer value"})  # only the header changes
    assert short_hash(f) == first == hashlib.sha256(torch.arange(6.0).numpy().tobytes()).hexdigest()[:12]


def test_from_reads_a_png_written_by_a1111(tiny_sd1, tmp_path, capsys):
    from helpers import generate, meta

    png = tmp_path / "a1111.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111_TEXT.replace("Steps: 28", "Steps: 2").replace(" <lora:add_detail:0.7>", ""))
    Image.new("RGB", (48, 32)).save(png, pnginfo=info)
    (path,) = generate(capsys, "--from", png, "--model", tiny_sd1, "--out", tmp_path / "out")
    p = meta(path)
    assert (p["prompt"], p["negative_prompt"], p["steps"], p["guidance"], p["seed"]) == (
        "masterpiece, (best quality:1.2), a cat",
        "lowres, bad anatomy",
        2,
        6.5,
        1234567890,
    )
    assert (p["width"], p["height"], p["scheduler"], p["clip_skip"]) == (48, 32, "dpm++2m_karras", 2)
    with Image.open(path) as im:
        assert im.size == (48, 32)


def test_from_an_a1111_png_says_pixels_differ(tiny_sd1, tmp_path):
    from conftest import run_cli

    png = tmp_path / "a1111.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 1, Sampler: Euler a, CFG scale: 7, Seed: 3, Size: 32x32")
    Image.new("RGB", (32, 32)).save(png, pnginfo=info)
    r = run_cli("generate", "--from", png, "--model", tiny_sd1, "--out", tmp_path / "out", "--quiet", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stderr.splitlines() if "GPU" in line]
    assert len(notes) == 1 and notes[0].startswith("latentdiff: note: ")


def test_every_sampler_and_schedule_reads_back_to_the_same_choice():
    """What we write (Sampler, Schedule type) is what A1111 1.10 reads back to the same sampler and
    schedule, and so do we: every runnable cell, and the old combined names A1111 reads too."""
    from latentdiff.images.infotext import sampler_name, schedule_type
    from latentdiff.sampling.schedulers import resolved, runnable_schedules, spec

    for sampler in SCHEDULERS:
        for schedule in runnable_schedules(sampler):
            choice = spec(sampler, schedule)
            fields = {"Sampler": sampler_name(choice, {}), "Schedule type": schedule_type(choice, {})}
            line = "x\nSteps: 2, " + "".join(f"{k}: {v}, " for k, v in fields.items() if v is not None) + "CFG scale: 7"
            back = params_from_a1111(line)[0]["scheduler"]
            assert resolved(back) == resolved(choice), (choice, line)
            combined = " ".join(v for v in fields.values() if v is not None)  # A1111 < 1.9: one name
            assert resolved(
                params_from_a1111(f"x\nSteps: 2, Sampler: {combined}, CFG scale: 7")[0]["scheduler"]
            ) == resolved(choice)
    # A1111 1.10 reads a plain "DPM++ 2M" as Automatic, i.e. Karras; "DPM++ 2M SDE Karras" (civitai's
    # most shared) is DPM++ 2M SDE with Karras.
    assert resolved(params_from_a1111("x\nSteps: 2, Sampler: DPM++ 2M, CFG scale: 7")[0]["scheduler"]) == (
        "dpm++2m",
        "karras",
    )
    assert (
        params_from_a1111("x\nSteps: 2, Sampler: DPM++ 2M SDE Karras, CFG scale: 7")[0]["scheduler"]
        == "dpm++2m_sde_karras"
    )
    params, notes = params_from_a1111("x\nSteps: 2, Sampler: Euler, Schedule type: Align Your Steps, CFG scale: 7")
    assert params["scheduler"] is None and any("Align Your Steps" in n for n in notes)
