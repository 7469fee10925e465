"""`finetune --method controlnet` on a tiny model: a few steps teach the ControlNet to steer the
picture where its map says, a killed run resumes bit for bit, the result is a diffusers ControlNet
folder that diffusers' pipeline and ours turn into the same pixels, and the dataset's maps are read
as its images are (same crop, skipped when broken, one line when there are none)."""

import json

import numpy as np
import pytest
import torch
from helpers import cfg, max_pixel_diff
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from latentdiff import Control, Pipeline
from latentdiff.cli.main import main
from latentdiff.training import checkpoint as ckpt
from latentdiff.training.data.dataset import ImageCaptionDataset
from latentdiff.training.data.scan import scan_dataset
from latentdiff.training.loop import finetune

CORNERS = [(4, 4), (44, 4), (4, 36), (44, 36)]  # each image's dark square (24 px) and its map's white one
SIDE = 24


def square_map(corner, size=(72, 64)) -> Image.Image:
    im = Image.new("RGB", size, "black")
    ImageDraw.Draw(im).rectangle((*corner, corner[0] + SIDE - 1, corner[1] + SIDE - 1), fill="white")
    return im


@pytest.fixture(scope="module")
def squares_with_maps(tmp_path_factory):
    """Four 72x64 pictures of a dark square on white, each with its map (white where the square is)
    in maps/, named by metadata.jsonl's conditioning_image column."""
    root = tmp_path_factory.mktemp("cn-ds")
    (root / "maps").mkdir()
    rows = []
    for i, corner in enumerate(CORNERS):
        im = Image.new("RGB", (72, 64), "white")
        ImageDraw.Draw(im).rectangle((*corner, corner[0] + SIDE - 1, corner[1] + SIDE - 1), fill="black")
        im.save(root / f"{i}.png")
        square_map(corner).save(root / "maps" / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": "a square", "conditioning_image": f"maps/{i}.png"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def run_cfg(dataset, model, out, **kw):
    # random crops and flips: the maps must follow their images' draws, on the non-cached path
    base = dict(method="controlnet", max_steps=6, lr=2e-2, crop="random", flip=True, caption_dropout=0.0)
    base.update(validate_every=6, validation_steps=2, validation_prompts=["a square"])
    return cfg(dataset, model, out, **{**base, **kw})


@pytest.fixture(scope="module")
def trained(squares_with_maps, tiny_sd1, tmp_path_factory):
    return finetune(run_cfg(squares_with_maps, tiny_sd1, tmp_path_factory.mktemp("cn-run") / "run"))


def generate(pipe, unit):
    return np.asarray(pipe("a square", steps=4, seed=3, controls=[unit])[0], dtype=float)


def test_trained_controlnet_steers_the_picture_where_its_map_differs(trained, tiny_sd1):
    from diffusers import ControlNetModel

    pipe = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp32")
    pipe.progress = False
    net = ControlNetModel.from_pretrained(trained)
    assert any(float(p.detach().abs().max()) > 0 for p in net.controlnet_mid_block.parameters()), "zero convs trained"
    a, b = square_map(CORNERS[0], (64, 64)), square_map(CORNERS[3], (64, 64))
    with_a, with_b = generate(pipe, Control(a, trained)), generate(pipe, Control(b, trained))
    base = np.asarray(pipe("a square", steps=4, seed=3)[0], dtype=float)
    assert np.array_equal(generate(pipe, Control(a, trained, weight=0.0)), base)
    differs = np.asarray(a)[..., 0] != np.asarray(b)[..., 0]  # the two squares
    change = np.abs(with_a - with_b).mean(-1)
    inside, outside = change[differs].mean(), change[~differs].mean()
    assert inside > 4, f"the map must steer the picture (mean change {inside:.2f} where the maps differ)"
    assert inside > 2 * outside, (
        f"the change must sit where the maps differ: {inside:.2f} there, {outside:.2f} elsewhere"
    )


def test_validation_image_is_steered_by_the_first_rows_map(trained, tiny_sd1, squares_with_maps):
    pipe = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp32")
    pipe.progress = False
    (sample,) = (trained / "samples").glob("*.png")
    maps = squares_with_maps / "maps"
    made = [Image.open(sample).convert("RGB")]
    expect = pipe(["a square"], steps=2, seed=1, controls=[Control(maps / "0.png", trained)])
    assert max_pixel_diff(made, expect) == 0
    assert max_pixel_diff(made, pipe(["a square"], steps=2, seed=1, controls=[Control(maps / "3.png", trained)])) > 0


def test_a_checkpoint_exports_as_a_controlnet_folder(trained, tmp_path):
    from latentdiff.training.export import export_checkpoint

    out = export_checkpoint(trained, tmp_path / "exported", dtype="fp16")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    final = load_file(str(trained / "diffusion_pytorch_model.safetensors"))
    half = load_file(str(out / "diffusion_pytorch_model.safetensors"))
    assert all(half[k].dtype == torch.float16 and torch.equal(half[k], final[k].half()) for k in final)


def test_killed_and_resumed_run_equals_the_uninterrupted_one_bitwise(
    trained, squares_with_maps, tiny_sd1, tmp_path, monkeypatch
):
    real_save = ckpt.save_checkpoint

    def save_then_die(*a, **k):  # the process is killed right after its first checkpoint
        real_save(*a, **k)
        raise KeyboardInterrupt

    out = tmp_path / "interrupted"
    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        finetune(run_cfg(squares_with_maps, tiny_sd1, out))
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)
    first = ckpt.latest_checkpoint(out)
    assert first.name == "step-00000002"
    assert all(k.startswith("controlnet.") for k in load_file(str(first / "trainable.safetensors")))
    assert (first / "optimizer.pt").is_file()
    finetune(run_cfg(squares_with_maps, tiny_sd1, out, resume=True))
    straight = load_file(str(trained / "diffusion_pytorch_model.safetensors"))
    resumed = load_file(str(out / "diffusion_pytorch_model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_saved_controlnet_gives_diffusers_pipeline_our_pixels(trained, tiny_sd1):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    from latentdiff.sampling.loop import make_scheduler

    ours = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp32")
    ours.progress = False
    ref = StableDiffusionControlNetPipeline.from_pretrained(
        tiny_sd1,
        controlnet=ControlNetModel.from_pretrained(trained),
        safety_checker=None,
        requires_safety_checker=False,
    )
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(ours.components.scheduler_config, "euler")
    image = square_map(CORNERS[1], (64, 64))
    mine = ours("a square", steps=4, seed=7, scheduler="euler", controls=[Control(image, trained, 0.9)])
    theirs = ref(
        "a square",
        image=image,
        num_inference_steps=4,
        generator=[torch.Generator().manual_seed(7)],
        controlnet_conditioning_scale=0.9,
        height=64,
        width=64,
    ).images
    assert max_pixel_diff(mine, theirs) <= 1
    assert max_pixel_diff(mine, ours("a square", steps=4, seed=7, scheduler="euler")) > 8


def test_maps_are_cut_as_their_images(tmp_path):
    """A map that is its image (a copy) comes out equal to the image's pixels under every random crop and flip."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "a-map.png").write_bytes((tmp_path / "a.png").read_bytes())
    row = {"file_name": "a.png", "text": "noise", "conditioning_image_file_name": "a-map.png"}
    (tmp_path / "metadata.jsonl").write_text(json.dumps(row) + "\n")
    scan = scan_dataset(tmp_path, 64, conditioning=True)
    assert [r.path.name for r in scan.records] == ["a.png"]  # the map is no training image
    data = ImageCaptionDataset(scan.records, 64, "random", flip=True, seed=5)
    placements = set()
    for epoch in range(8):
        data.set_epoch(epoch)
        item = data[0]
        assert torch.allclose(item["conditioning_values"] * 2 - 1, item["pixel_values"], atol=1e-6)
        placements.add(tuple(item["size_ids"].tolist()))
    assert len(placements) > 2, "the draws must vary for this to mean anything"
    for mirrored in (False, True):  # the cached path: the centre cut, maybe mirrored
        pixels = next(iter(ImageCaptionDataset(scan.records, 64).unaugmented(1)))[0][0]
        expect = pixels.flip(-1) if mirrored else pixels
        assert torch.allclose(data.conditioning(0, mirrored) * 2 - 1, expect, atol=1e-6)


def test_rows_with_a_missing_or_broken_map_are_skipped(squares_with_maps, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(squares_with_maps, root)
    (root / "maps" / "1.png").unlink()
    (root / "maps" / "3.png").unlink()  # and row 3 names no map (the file would be an uncaptioned image)
    (root / "maps" / "2.png").write_bytes(b"not a png")
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    del rows[3]["conditioning_image"]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scan = scan_dataset(root, 64, conditioning=True)
    assert [r.path.name for r in scan.records] == ["0.png"]
    assert scan.records[0].conditioning == root / "maps" / "0.png"
    reasons = dict(scan.skipped)
    assert reasons.keys() == {"1.png", "2.png", "3.png"}
    assert reasons["1.png"] == "conditioning image maps/1.png: missing file"
    assert reasons["2.png"].startswith("conditioning image maps/2.png: ")
    assert reasons["3.png"].startswith("no conditioning image")
    assert len(scan_dataset(root, 64).records) == 4  # other methods train every image, the maps never


def test_controlnet_weights_past_memory_are_one_line(squares_with_maps, tiny_sd1, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("latentdiff.runtime.memory.available_bytes", lambda device: 100_000)
    argv = ["finetune", str(squares_with_maps), "--model", str(tiny_sd1), "--out", str(tmp_path / "o")]
    assert main([*argv, "--method", "controlnet", "--resolution", "64"]) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "error" in x]  # beside the dataset's note
    assert "Traceback" not in err and "--method controlnet" in line and "ControlNet weights" in line, err
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_dataset_without_maps_is_one_line_exit_2(squares_with_maps, tiny_sd1, tmp_path, capsys):
    root = tmp_path / "plain"
    root.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 64), "red").save(root / f"{i}.png")
        (root / f"{i}.txt").write_text("a red square")
    argv = ["finetune", str(root), "--model", str(tiny_sd1), "--out", str(tmp_path / "o"), "--method", "controlnet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "conditioning_image" in err and "--method controlnet" in err
    assert not (tmp_path / "o" / "checkpoints").exists()


@pytest.mark.slow
def test_sdxl_controlnet_trains_in_bf16_and_loads(squares_with_maps, tiny_sdxl, tmp_path):
    """SDXL (its pooled text and size ids reach the ControlNet too) under bf16 autocast, validation included."""
    from latentdiff.runtime.device import cpu_bf16

    if not cpu_bf16().runs and not torch.cuda.is_available():
        pytest.skip("torch cannot compute in bf16 here")
    out = finetune(
        run_cfg(squares_with_maps, tiny_sdxl, tmp_path / "xl", max_steps=2, mixed_precision="bf16", validate_every=2)
    )
    assert len(list((out / "samples").glob("*.png"))) == 1
    weights = load_file(str(out / "diffusion_pytorch_model.safetensors"))
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())
    pipe = Pipeline.from_pretrained(tiny_sdxl, device="cpu", dtype="fp32")
    pipe.progress = False
    image = square_map(CORNERS[0], (64, 64))
    with_map = pipe("a square", steps=2, seed=0, controls=[Control(image, out)])
    assert max_pixel_diff(with_map, pipe("a square", steps=2, seed=0)) > 0
