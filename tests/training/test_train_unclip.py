"""`finetune --method unclip`: a tiny SD 2 model and a CLIP image encoder made a Stable unCLIP decoder and
trained on finetune's loop (each sample's image embedding noised to a random level as the class label).
Step 0 is the SD model's UNet; the loss falls; resume is exact; the result loads in diffusers'
StableUnCLIPImg2ImgPipeline (same image as ours) and runs `generate --variations`; refusals are one line."""

import json

import numpy as np
import pytest
import torch
from helpers import assert_same_last_checkpoint
from test_train_upscaler import cfg, pictures  # noqa: F401 (the fixture and the run config)

from latentdiff.cli.main import main
from latentdiff.training.loop import finetune


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from latentdiff.families.unclip_tiny import tiny_vision

    folder = tmp_path_factory.mktemp("models") / "clip-vision"
    torch.manual_seed(4)
    parts = tiny_vision()
    parts["image_encoder"].save_pretrained(folder)
    parts["feature_extractor"].save_pretrained(str(folder))
    return folder


def unclip_cfg(pictures, model, out, encoder, **kw):  # noqa: F811
    return cfg(pictures, model, out, **{"method": "unclip", "image_encoder": str(encoder), "lr": 3e-4, **kw})


@pytest.fixture(scope="module")
def trained(pictures, tiny_sd2, encoder, tmp_path_factory):  # noqa: F811
    return finetune(unclip_cfg(pictures, tiny_sd2, tmp_path_factory.mktemp("runs") / "decoder", encoder))


def test_decoder_starts_as_the_sd_unet(tiny_sd2, encoder):
    from latentdiff.models.assemble import load_components
    from latentdiff.training.config import FinetuneConfig
    from latentdiff.training.unclip_decoder import as_decoder

    sd = load_components(tiny_sd2)
    base = sd.unet
    c = as_decoder(FinetuneConfig(dataset="d", out="o", model="m", method="unclip", image_encoder=str(encoder)),
                   load_components(tiny_sd2))  # fmt: skip
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn((1, 4, 8, 8), generator=g), torch.randn((1, 7, 32), generator=g)
    labels = torch.randn((1, 64), generator=g)
    with torch.no_grad():
        want = base(x, 10, text).sample
        got = c.unet(x, 10, text, class_labels=labels).sample
    assert torch.allclose(got, want, atol=1e-5)  # the class embedding adds zeros at step 0


def test_loss_falls_and_resume_is_exact(trained, pictures, tiny_sd2, encoder, tmp_path):  # noqa: F811
    split = tmp_path / "split"
    finetune(unclip_cfg(pictures, tiny_sd2, split, encoder, max_steps=1))
    finetune(unclip_cfg(pictures, tiny_sd2, split, encoder, resume=True))
    assert_same_last_checkpoint(trained, split)


@pytest.mark.slow
def test_loss_falls(pictures, tiny_sd2, encoder, tmp_path):  # noqa: F811
    out = finetune(unclip_cfg(pictures, tiny_sd2, tmp_path / "long", encoder, max_steps=40, checkpoint_every=40,
                              batch_size=4, lr=1e-3, caption_dropout=0.0))  # fmt: skip
    rows = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(rows[-10:]) < sum(rows[:10]), rows


def test_decoder_loads_in_stable_unclip_img2img_and_draws_variations(trained, generate, tmp_path):
    """`generate --variations` on the trained decoder draws what StableUnCLIPImg2ImgPipeline draws."""
    from diffusers import StableUnCLIPImg2ImgPipeline
    from PIL import Image

    index = json.loads((trained / "model_index.json").read_text())
    assert index["_class_name"] == "StableUnCLIPImg2ImgPipeline"
    ref = StableUnCLIPImg2ImgPipeline.from_pretrained(trained)
    ref.set_progress_bar_config(disable=True)
    assert ref.image_normalizer.std.abs().min() > 0 and not torch.all(ref.image_normalizer.std == 1)
    picture = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(picture)
    code, out, err = generate(trained, tmp_path / "cli", "--variations", picture, "--noise-level", "10",
                              "--guidance", "3", "--width", "32", "--height", "32")  # fmt: skip
    assert code == 0, err
    want = ref(image=Image.open(picture), prompt="a red apple", guidance_scale=3.0, num_inference_steps=2, width=32,
               height=32, noise_level=10, generator=torch.Generator().manual_seed(3), output_type="np").images  # fmt: skip
    got = np.asarray(Image.open(out.strip()).convert("RGB"), dtype=float)
    assert want.std() > 0.02 and np.abs(got - np.round(want[0] * 255)).max() <= 1


def test_export_keeps_the_fitted_normalizer(trained, tmp_path):
    from safetensors.torch import load_file

    from latentdiff.training.export import export_checkpoint

    out = export_checkpoint(trained, tmp_path / "x")
    for name in ("image_normalizer", "unet"):
        a, b = (load_file(str(next((d / name).glob("*.safetensors")))) for d in (trained, out))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def _refused(capsys, *argv) -> str:
    assert main(["finetune", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


def test_refusals_are_one_line(pictures, tiny_sd2, tiny_sdxl, encoder, tmp_path, capsys):  # noqa: F811
    base = [pictures, "--method", "unclip", "--resolution", "32", "--max-steps", "1"]
    assert "--image-encoder" in _refused(capsys, *base, "--model", tiny_sd2, "--out", tmp_path / "a")
    err = _refused(capsys, *base, "--model", tiny_sdxl, "--out", tmp_path / "b", "--image-encoder", encoder)
    assert "SD 1.x/2.x" in err
    err = _refused(capsys, *base, "--model", tiny_sd2, "--out", tmp_path / "c", "--image-encoder", tmp_path)
    assert "CLIPVisionModelWithProjection" in err


def test_fuzz_image_encoder_folders(tiny_sd2, tmp_path):
    """--method unclip's --image-encoder as the prior's is fuzzed (test_train_prior.py): one line each."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from test_train_prior import encoder_paths

    from latentdiff.errors import LatentDiffError
    from latentdiff.models.assemble import load_components
    from latentdiff.training.config import FinetuneConfig
    from latentdiff.training.unclip_decoder import as_decoder

    paths, sd = encoder_paths(tmp_path), load_components(tiny_sd2)

    @settings(max_examples=10, deadline=None, derandomize=True, database=None)
    @given(st.sampled_from(paths) | st.text(max_size=8))
    def one(path):
        with pytest.raises(LatentDiffError) as e:
            as_decoder(FinetuneConfig(dataset="d", out="o", model="m", method="unclip", image_encoder=path), sd)
        assert str(e.value) and "\n" not in str(e.value)

    one()
