"""PNG Info both ways: what we write, A1111 1.10 reads back to the same settings (checked through its
own parse rules, tests/images/a1111_files.py); what A1111 writes, --from reads from PNG, JPEG and
WebP, honouring what it can and naming the rest on one line."""

import numpy as np
import pytest
from a1111_files import a1111_networks, a1111_reads, exif_block, jpeg_with, user_comment, webp_with
from PIL import Image, PngImagePlugin

from latentdiff.images.a1111_read import NOISE, hires_schedule
from latentdiff.images.infotext import format_infotext, params_from_a1111, sampler_name, schedule_type
from latentdiff.images.write import read_params
from latentdiff.sampling.schedulers import SAMPLERS, SCHEDULERS, SCHEDULES, resolved, runnable_schedules, spec

# A1111 1.10's samplers and the schedule its "Automatic" runs (sd_samplers_kdiffusion.py samplers_k_diffusion
# options' "scheduler"; the rest run their model's plain sigmas, A1111's "Uniform"); written out by hand.
A1111_AUTOMATIC = {"DPM++ 2M": "Karras", "DPM++ SDE": "Karras", "DPM++ 2M SDE": "Exponential"}
A1111_AUTOMATIC |= {"DPM++ 2M SDE Heun": "Exponential", "DPM++ 3M SDE": "Exponential", "DPM2": "Karras"}
A1111_AUTOMATIC |= {"DPM2 a": "Karras", "DPM++ 2S a": "Karras", "Restart": "Karras"}
A1111_K = {"Euler a", "Euler", "LMS", "Heun", "DPM fast", "DPM adaptive", "LCM", *A1111_AUTOMATIC}
# A1111's timestep samplers (sd_samplers_timesteps.py) take no schedule type: their own uniform timesteps.
A1111_TIMESTEPS = {"DDIM", "PLMS", "UniPC", "DDIM CFG++"}
NOT_A1111 = {"DDPM", "TCD", "DEIS"}  # ours (ComfyUI's, Forge's), not A1111's: it cannot read them

BASE = {"prompt": "a (red:1.2) apple, on a table", "negative_prompt": "blurry", "steps": 20, "guidance": 6.5}
BASE |= {"seed": 1234, "width": 512, "height": 768, "model_hash": "6ce0161689", "model": "/m/v1-5.safetensors"}


def a1111_schedule(fields: dict) -> str:
    """The schedule A1111 1.10 runs for a line's Sampler and Schedule type."""
    sampler, schedule = fields["Sampler"], fields["Schedule type"]
    if sampler in A1111_TIMESTEPS:
        return "Uniform"
    return A1111_AUTOMATIC.get(sampler, "Uniform") if schedule == "Automatic" else schedule


def test_every_sampler_and_schedule_a1111_reads_back_as_we_ran_it():
    """Every runnable cell of the table: A1111's parse rules give back the sampler, and the schedule
    A1111 runs for it is the one we ran (where A1111 runs schedules at all), and our reader agrees."""
    unreadable = set()
    for sampler in SCHEDULERS:
        for schedule in runnable_schedules(sampler):
            choice = spec(sampler, schedule)
            p = {
                **BASE,
                "scheduler": choice,
                "sampler": sampler_name(choice, {}),
                "schedule_type": schedule_type(choice, {}),
            }
            line = format_infotext(p)
            fields = a1111_reads(line)
            ran = SCHEDULES[resolved(choice)[1] or "uniform"].a1111
            assert fields["Sampler"] == SAMPLERS[sampler].a1111, line
            if fields["Sampler"] in NOT_A1111:
                unreadable.add(fields["Sampler"])
            elif fields["Sampler"] in A1111_TIMESTEPS and ran != "Uniform":
                unreadable.add(f"{fields['Sampler']} {ran}")
            else:
                assert fields["Sampler"] in A1111_K | A1111_TIMESTEPS and a1111_schedule(fields) == ran, line
            assert resolved(params_from_a1111(line)[0]["scheduler"]) == resolved(choice), line
    # The cells A1111 cannot run as we do: our samplers it lacks, and schedule types on its timestep
    # samplers (it ignores them there). Listed so that a change to the table shows up here.
    assert unreadable == {"DDPM", "TCD", "DEIS", "DDIM SGM Uniform", "UniPC Karras", "UniPC Exponential"} | {
        "UniPC Beta",
        "UniPC SGM Uniform",
        "PLMS SGM Uniform",
    }


@pytest.mark.parametrize("hires_steps, strength", [(None, 0.5), (None, 0.7), (30, 0.35), (7, 1.0), (25, 0.7)])
def test_hires_fix_reads_back_as_a1111_runs_it(hires_steps, strength):
    """A1111 denoises every one of its "Hires steps" (Steps when 0) on a schedule of steps / strength;
    we denoise int(steps * strength) of ours. What we write makes A1111 denoise as many, with the same
    scale, strength and upscaler; what we read back denoises as many again."""
    p = {**BASE, "hires": 2.0, "hires_strength": strength, "hires_steps": hires_steps, "hires_upscaler": "lanczos"}
    fields = a1111_reads(format_infotext(p))
    ours = max(1, int((hires_steps or 20) * strength))  # diffusers' img2img rule, by hand
    assert int(fields.get("Hires steps", "0")) or int(fields["Steps"]) == ours
    assert (float(fields["Hires upscale"]), float(fields["Denoising strength"])) == (2.0, strength)
    assert fields["Hires upscaler"] == "Lanczos" and fields["Size-1"] == "512"  # the first pass's size
    back = params_from_a1111(format_infotext(p))[0]
    assert (back["hires"], back["hires_strength"], back["hires_upscaler"]) == (2.0, strength, "lanczos")
    assert int(back["hires_steps"] * strength) == ours


def test_hires_steps_from_hand_written_a1111_lines():
    """A1111: "Hires steps: 10, Denoising strength: 0.5" denoises 10 steps of a 20-step schedule."""
    assert hires_schedule(10, 0.5) == 20 and hires_schedule(12, 0.45) == 27  # int(12.15) = 12, int(11.7) = 11
    assert hires_schedule(17, 0.7) == 25 and hires_schedule(20, 1.0) == 20
    line = "a\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x96, Denoising strength: 0.5, "
    p = params_from_a1111(line + "Hires upscale: 1.5, Hires upscaler: Latent")[0]
    assert (p["hires"], p["hires_steps"], p["hires_upscaler"], p["hires_strength"]) == (1.5, 40, "latent", 0.5)
    p, notes = params_from_a1111(line + "Hires resize: 128x192, Hires steps: 5, Hires upscaler: Latent (bicubic)")
    assert (p["hires"], p["hires_steps"], p["hires_upscaler"]) == (2.0, 10, "latent-bicubic")
    assert not notes or "Hires upscaler" not in notes[-1]  # all of A1111's latent modes run as they are
    p, notes = params_from_a1111(line + "Hires upscale: 2, Hires upscaler: R-ESRGAN 4x+")
    assert p["hires_upscaler"] == "lanczos" and "Hires upscaler 'R-ESRGAN 4x+' (ran as lanczos)" in notes[-1]
    p, notes = params_from_a1111(line + "Hires resize: 128x100")
    assert "hires" not in p and "Hires resize '128x100' (not a scale of Size)" in notes[-1]


def test_img2img_strength_clip_skip_vae_and_lora_tags_as_a1111_reads_them():
    loras = [{"name": "style", "hash": "0123456789ab", "scale": 0.8, "path": "/l/style.safetensors"}]
    p = {**BASE, "strength": 0.6, "clip_skip": 2, "vae": "/v/vae-ft-mse.safetensors", "vae_hash": "735e4c3a44"}
    fields = a1111_reads(format_infotext({**p, "loras": loras, "tag_loras": [{**loras[0], "name": "tagged"}]}))
    assert (fields["Denoising strength"], fields["Clip skip"]) == ("0.6", "2")
    assert (fields["VAE"], fields["VAE hash"], fields["Model hash"]) == (
        "vae-ft-mse.safetensors",
        "735e4c3a44",
        "6ce0161689",
    )
    text, tags = a1111_networks(fields["Prompt"])
    assert text.strip() == BASE["prompt"] and tags == [("lora", ["style", "0.8"])]
    assert fields["Lora hashes"] == "style: 0123456789ab, tagged: 0123456789ab"
    assert (
        "Clip skip" not in format_infotext({**BASE, "clip_skip": 1})
        and a1111_reads(format_infotext(BASE))["Clip skip"] == "1"
    )


A1111_LINE = (
    "a cat <lora:detail:0.6> <lyco:grain:0.3> <hypernet:old:1>\nNegative prompt: lowres\n"
    "Steps: 20, Sampler: DPM++ 2M SDE, Schedule type: Karras, CFG scale: 6, Seed: 77, Size: 32x48, "
    "Model hash: 0123456789, Model: base, VAE hash: 735e4c3a44, VAE: vae-ft-mse.safetensors, Denoising strength: 0.4, "
    "Clip skip: 2, Hires upscale: 2, Hires steps: 4, Hires upscaler: Latent, Hires sampler: Euler, "
    'Variation seed: 9, Variation seed strength: 0.2, ENSD: 31337, Emphasis: No norm, Lora hashes: "detail: 1a2b", '
    "Version: v1.10.1"
)


def test_an_a1111_line_is_honoured_or_named():
    params, notes = params_from_a1111(A1111_LINE, "a.png")
    assert params["prompt"] == "a cat <lora:detail:0.6> <lora:grain:0.3>"  # read from --lora-dir; lyco is lora
    assert (params["scheduler"], params["steps"], params["seed"], params["clip_skip"]) == (
        "dpm++2m_sde_karras",
        20,
        77,
        2,
    )
    assert (params["hires"], params["hires_strength"], params["hires_steps"], params["hires_upscaler"]) == (
        2,
        0.4,
        10,
        "latent",
    )
    assert params["a1111_model_hash"] == "0123456789" and "strength" not in params
    assert any("VAE 'vae-ft-mse.safetensors' (hash 735e4c3a44); pass --vae" in n for n in notes)
    last = notes[-1]
    # a hires fix by A1111's "Latent" upscaler runs on A1111's own path: its noise keys are honoured
    assert last == "a.png: not honoured here, ignored: <hypernet:old:1>, Hires sampler, Emphasis"
    assert (params["rng"], params["variation_seed"], params["ensd"]) == ("nv", 9, 31337)
    # an upscaler A1111's path lacks stays on diffusers' path, its noise keys named (inpainting, either
    # area, any masked content, runs on A1111's)
    for other in ("Hires upscaler: 4x-UltraSharp, ",):
        params, notes = params_from_a1111(A1111_LINE.replace("Hires upscaler: Latent, ", other), "a.png")
        assert "rng" not in params and "Variation seed, Variation seed strength, ENSD" in notes[-1], other
    assert NOISE >= {"Variation seed", "ENSD", "RNG", "Seed resize from"}


def _png(path, text):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (32, 32)).save(path, pnginfo=info)
    return path


@pytest.mark.parametrize("kind", ["jpeg", "webp"])
def test_jpeg_and_webp_exif_read_as_the_png(tmp_path, kind):
    text = A1111_LINE.replace("a cat", "a cat, \u00e9t\u00e9 \U0001f600")
    f = tmp_path / f"a.{kind}"
    f.write_bytes((jpeg_with if kind == "jpeg" else webp_with)(exif_block(user_comment(text))))
    with Image.open(f) as im:
        im.load()  # a valid image file
    png = _png(tmp_path / "a.png", text)
    read, expected = read_params(f), read_params(png)
    assert read.pop("notes") == [n.replace(str(png), str(f)) for n in expected.pop("notes")]
    assert read == expected
    assert read_params(f)["prompt"].startswith("a cat, \u00e9t\u00e9 \U0001f600")


def test_from_names_what_it_cannot_honour_on_stderr(tiny_sd1, tmp_path, capsys):
    from latentdiff.cli.main import main

    line = (
        "a cat\nSteps: 1, Sampler: Euler, CFG scale: 7, Seed: 3, Size: 32x32, Face restoration: CodeFormer, ENSD: 31337"
    )
    f = tmp_path / "a.jpg"
    f.write_bytes(jpeg_with(exif_block(user_comment(line))))
    code = main(
        [
            "generate",
            "--from",
            str(f),
            "--model",
            str(tiny_sd1),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    named = [x for x in err.splitlines() if "not honoured" in x]
    assert named == [
        f"latentdiff: note: {f}: not honoured here, ignored: Face restoration, ENSD"
    ]  # no RNG or Version: diffusers' path
    assert "model hash" not in err  # no Model hash in the line: nothing to check


def test_model_hash_is_checked_against_a_single_file(tmp_path):
    from latentdiff.images.a1111_read import model_hash_note

    f = tmp_path / "m.safetensors"
    f.write_bytes(b"weights")
    import hashlib

    ours = hashlib.sha256(b"weights").hexdigest()[:10]
    assert model_hash_note(ours.upper(), f) is None
    assert f"{f} has hash {ours}: pixels differ" in model_hash_note("0123456789", f)
    assert "cannot be checked against" in model_hash_note("0123456789", tmp_path)


def test_img2img_strength_waits_for_an_init_image(tiny_sd1, tmp_path, capsys):
    from helpers import generate, meta, noise_image

    f = _png(
        tmp_path / "i2i.png",
        "a cat\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 3, Size: 32x32, Denoising strength: 0.5",
    )
    (plain,) = generate(capsys, "--from", f, "--model", tiny_sd1, "--out", tmp_path / "a")
    assert "strength" not in meta(plain)
    noise_image((32, 32)).save(tmp_path / "init.png")
    (made,) = generate(
        capsys, "--from", f, "--model", tiny_sd1, "--out", tmp_path / "b", "--init-image", tmp_path / "init.png"
    )
    assert meta(made)["strength"] == 0.5


@pytest.mark.parametrize(
    "comment, says",
    [
        (b"UNICODE\0" + b"\xd8\x00\x00a", "its EXIF UserComment is not valid UTF-16-BE (at byte 8)"),
        (b"UNICODE\0abc", "its EXIF UserComment is not valid UTF-16-BE"),
        (b"XYZ\0\0\0\0\0text", "its EXIF UserComment has an unknown character code"),
    ],
)
def test_bad_exif_comments_are_one_line(tmp_path, capsys, comment, says):
    from helpers import fails

    f = tmp_path / "bad.jpg"
    f.write_bytes(jpeg_with(exif_block(comment)))
    assert f"--from image {f} cannot be read: {says}" in fails(capsys, "--from", f)


def test_broken_and_huge_exif_are_one_line(tmp_path, capsys):
    from helpers import fails

    broken = tmp_path / "broken.jpg"
    block = exif_block(user_comment("a\nSteps: 1, Seed: 1, CFG scale: 7"))
    broken.write_bytes(jpeg_with(block[:6] + b"MM\0\x2a\xff\xff\xff\x00" + block[14:]))
    line = fails(capsys, "--from", broken)
    assert line.startswith(f"latentdiff: error: --from image {broken} cannot be read: its EXIF is damaged (")
    huge = tmp_path / "huge.webp"
    huge.write_bytes(webp_with(exif_block(user_comment("x" * (3 << 19) + "\nSteps: 1, Seed: 1, CFG scale: 7"))))
    assert "its EXIF is 3.0 MiB; at most 2.0 MiB is read" in fails(capsys, "--from", huge)
    assert "it is not a PNG, JPEG or WebP file" in fails(capsys, "--from", _gif(tmp_path / "a.gif"))
    data = bytearray(webp_with(exif_block(user_comment("a\nSteps: 1, Seed: 1, CFG scale: 7"))))
    assert data[12:16] == b"VP8X"
    data[24:30] = b"\xff\x3f\x00\xff\x3f\x00"  # a canvas of 16384 x 16384 declared (found by the fuzzing: a traceback)
    bomb = tmp_path / "bomb.webp"
    bomb.write_bytes(bytes(data))
    assert "its header declares a picture of more than" in fails(capsys, "--from", bomb)


def _gif(path):
    Image.new("RGB", (8, 8)).save(path, format="GIF")
    return path


@pytest.mark.parametrize("scheduler", ["euler_a", "dpm++2m_karras", "ddim", "dpm++2m_sde"])
def test_from_our_own_pngs_gives_the_same_pixels(tiny_sd1, tmp_path, capsys, scheduler):
    from helpers import made_and_replayed

    params, fields = made_and_replayed(
        capsys, tmp_path, "a cat", "--model", tiny_sd1, "--scheduler", scheduler, "--width", 32, "--height", 32
    )
    assert resolved(params_from_a1111(f"a\nSteps: 2, Sampler: {fields['Sampler']}, Schedule type: "
                                      f"{fields.get('Schedule type', 'Automatic')}, CFG scale: 7")[0]["scheduler"]) == resolved(scheduler)  # fmt: skip


@pytest.mark.slow
def test_from_our_own_pngs_gives_the_same_pixels_for_every_sampler(tiny_sd1, tmp_path, capsys):
    from helpers import made_and_replayed

    # Every sampler at its Automatic schedule and, for the sigma samplers, Karras: the schedule types' names
    # read back through the A1111 line cell by cell (test_every_sampler_and_schedule_a1111_reads_back_as_we_ran_it).
    for sampler in SCHEDULERS:
        for schedule in {"automatic", "karras"} & set(runnable_schedules(sampler)):
            out = tmp_path / spec(sampler, schedule)
            made_and_replayed(capsys, out, "a cat", "--model", tiny_sd1, "--scheduler", spec(sampler, schedule),
                              "--width", 32, "--height", 32, "--steps", 3)  # fmt: skip


@pytest.mark.parametrize("scheduler", [None, "dpm++2m_karras", "euler_a", "ddim", "euler_exponential", "dpm++2m_sde"])
def test_a1111_png_and_our_png_pixels(tiny_sd1, tmp_path, capsys, scheduler):
    """An A1111 line of ours read back (the parameters text alone, from a WebP's EXIF) gives the
    pixels of the image: the sampler and schedule it names are the ones that ran."""
    from helpers import generate, pixels

    chosen = ["--scheduler", scheduler] if scheduler else []
    args = ["a red apple", "--model", tiny_sd1, "--steps", 2, "--width", 32, "--height", 32, *chosen]
    (made,) = generate(capsys, *args, "--out", tmp_path / "a")
    with Image.open(made) as im:
        text = im.text["parameters"]
    f = tmp_path / "only-a1111.webp"
    f.write_bytes(webp_with(exif_block(user_comment(text))))
    (again,) = generate(capsys, "--from", f, "--model", tiny_sd1, "--out", tmp_path / "b")
    assert np.array_equal(pixels(again), pixels(made))


def test_inpainting_fields_as_a1111_writes_them():
    inpaint = {**BASE, "strength": 0.6, "mask": "/m.png", "mask_blur": 6, "inpaint_area": "masked", "padding": 40}
    fields = a1111_reads(format_infotext(inpaint))
    assert (fields["Mask blur"], fields["Inpaint area"], fields["Masked area padding"]) == ("6", "Only masked", "40")
    back, notes = params_from_a1111(format_infotext(inpaint))
    assert (back["strength"], back["mask_blur"], back["inpaint_area"], back["padding"]) == (0.6, 6, "masked", 40)
    assert not any("ignored" in n for n in notes)
