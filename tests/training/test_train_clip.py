"""train-clip end to end on 12 tiny generated images and the tiny SD model's text encoder (offline,
seconds): the contrastive loss against transformers' own, loss falling, exact resume, the saved towers
loading in transformers (the unCLIP image_encoder/ + feature_extractor/ layout), retrieval, bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from latentdiff.cli.main import main
from latentdiff.errors import UsageError
from latentdiff.training.clip_config import ClipTrainConfig

COLORS = ["red", "green", "blue", "orange", "purple", "black"]
TINY_VISION = dict(patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """12 coloured circles and squares on white, 32x32, each with two alt_texts; the last two are held out."""
    root = tmp_path_factory.mktemp("clip-shapes")
    rows = []
    for i in range(12):
        im, color, shape = Image.new("RGB", (32, 32), "white"), COLORS[i % 6], "circle" if i < 6 else "square"
        (ImageDraw.Draw(im).ellipse if i < 6 else ImageDraw.Draw(im).rectangle)((6, 6, 26, 26), fill=color)
        im.save(root / f"{i:02d}.png")
        alts = [f"{color} {shape}, shapes", f"a {shape} in {color}"]
        split = "heldout" if i in (5, 11) else "train"
        rows.append({"file_name": f"{i:02d}.png", "text": f"{color} {shape}", "split": split, "alt_texts": alts})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def config(shapes, model, out, **kw):
    values = dict(
        dataset=str(shapes),
        model=str(model),
        out=str(out),
        vision=TINY_VISION,
        projection_dim=32,  # the tiny unCLIP decoder's image embedding width
        resolution=32,
        batch_size=5,
        lr=3e-3,
        warmup_steps=0,
        lr_schedule="constant",
        max_steps=4,
        checkpoint_every=100,
        log_every=1,
        num_threads=1,
    )
    return ClipTrainConfig(**{**values, **kw})


def rows(run):
    return [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]


def test_loss_is_clips_own():
    """The symmetric InfoNCE against transformers' clip_loss on the same logits."""
    from transformers.models.clip.modeling_clip import image_text_contrastive_loss as reference

    from latentdiff.training.clip import clip_loss

    g = torch.Generator().manual_seed(0)
    image, text, scale = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g), torch.tensor(2.0)
    n = torch.nn.functional.normalize
    logits_per_text = scale.exp() * n(text, dim=-1) @ n(image, dim=-1).T
    assert clip_loss(image, text, scale).item() == pytest.approx(reference(logits_per_text).item(), rel=1e-6)
    assert clip_loss(image, text, torch.tensor(9.0)) == clip_loss(image, text, torch.tensor(4.7))  # clipped at 100


def test_every_caption_of_an_image_is_drawn(shapes):
    from latentdiff.training.clip import Captions
    from latentdiff.training.data.scan import scan_dataset

    records = scan_dataset(shapes, 32).records
    assert records[0].alt_captions == ("red circle, shapes", "a circle in red")

    class Tok:  # Captions tokenizes once; the draw is what is tested here
        eos_token_id = 1

        def __call__(self, texts, **kw):
            return type("Ids", (), {"input_ids": torch.zeros(len(texts), 4, dtype=torch.long)})

    captions, g = Captions(records, Tok(), 4, use_alts=True), torch.Generator().manual_seed(0)
    drawn = {captions.texts[i] for _ in range(30) for i in captions.draw(torch.tensor([0]), g).tolist()}
    assert drawn == {"red circle", "red circle, shapes", "a circle in red"}
    assert Captions(records, Tok(), 4, use_alts=False).texts == [r.caption for r in records]


def test_pooled_outputs_cut_after_each_caption_equal_the_full_window(tiny_sd1):
    """The frozen tower's cache runs captions cut to their length, in length-sorted chunks: the same
    pooled outputs as the pipelines' padding to the full window."""
    from latentdiff.models.assemble import load_text_encoder
    from latentdiff.training.clip import load_text_tower, pooled_outputs, tokenize

    text, tokenizer = load_text_tower(str(tiny_sd1), 16)
    texts = ["a", "red circle", "a blue square in the middle of a white picture", "", "green"]
    window = text.config.max_position_embeddings
    full = tokenizer(texts, padding="max_length", max_length=window, truncation=True, return_tensors="pt").input_ids
    expected = load_text_encoder(tiny_sd1)[0].float()(input_ids=full).pooler_output
    got = pooled_outputs(text, tokenize(tokenizer, texts, window), tokenizer.eos_token_id, torch.device("cpu"))
    assert (got - expected).abs().max().item() < 1e-5


def test_top1_counts_a_shared_caption_as_right():
    from latentdiff.training.clip_eval import top1

    image, text = torch.eye(3), torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])
    result = top1(image, text, ["a", "a", "b"], torch.arange(3))
    assert result["image_to_text"] == pytest.approx(1 / 3)  # images 1 and 2 find "b" and "a": wrong
    assert result["text_to_image"] == pytest.approx(2 / 3)  # caption 1 finds image 0, also "a": right


def test_run_learns_and_writes_towers_transformers_load(shapes, tiny_sd1, tmp_path):
    from transformers import CLIPImageProcessor, CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    from latentdiff.models.assemble import load_image_encoder
    from latentdiff.training.clip import train_clip
    from latentdiff.training.clip_eval import pixels

    run = tmp_path / "run"
    result = train_clip(config(shapes, tiny_sd1, run, max_steps=25))
    losses = [r["loss"] for r in rows(run)]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    vision = CLIPVisionModelWithProjection.from_pretrained(run / "image_encoder")
    text = CLIPTextModelWithProjection.from_pretrained(run / "text_encoder")
    assert vision.config.projection_dim == text.config.projection_dim == 32
    assert load_image_encoder(run / "image_encoder").config.image_size == 32  # unCLIP's and IP-Adapter's loader
    # The saved feature_extractor prepares a picture as training did.
    image = Image.open(shapes / "00.png")
    processed = CLIPImageProcessor.from_pretrained(run / "feature_extractor")(image, return_tensors="pt").pixel_values
    trained = pixels(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None])
    assert (processed - trained).abs().max().item() < 1e-5
    saved = json.loads((run / "eval.json").read_text())
    assert saved["heldout"]["images"] == 2 and saved["heldout_among_all"]["gallery"] == 12
    assert saved["train"]["images"] == 10 and saved == json.loads(json.dumps(result))
    assert 0 <= saved["heldout"]["image_to_text"] <= 1 and saved["train"]["image_to_text"] >= 0.3
    # eval-emoji --clip scores the saved folder as the run scored its towers
    assert (
        main(["eval-emoji", str(shapes), "--clip", str(run), "--n-train", "512", "--out", str(tmp_path / "e.json")])
        == 0
    )
    again = json.loads((tmp_path / "e.json").read_text())
    assert {k: again[k] for k in ("heldout", "heldout_among_all", "train")} == {
        k: saved[k] for k in ("heldout", "heldout_among_all", "train")
    }


def test_resume_equals_an_uninterrupted_run(shapes, tiny_sd1, tmp_path):
    """With the text tower fine-tuned too, so its weights and the caption draws are in the checkpoint."""
    from safetensors.torch import load_file

    from latentdiff.training.clip import train_clip

    train_clip(config(shapes, tiny_sd1, tmp_path / "whole", max_steps=4, train_text=True, eval_train_images=0))
    train_clip(config(shapes, tiny_sd1, tmp_path / "split", max_steps=2, train_text=True, eval_train_images=0))
    argv = ["train-clip", str(shapes), "--out", str(tmp_path / "split"), "--resume", "--max-steps", "4"]
    assert main(argv) == 0
    for tower in ("image_encoder", "text_encoder"):
        whole = load_file(tmp_path / "whole" / tower / "model.safetensors")
        split = load_file(tmp_path / "split" / tower / "model.safetensors")
        assert max((whole[k] - split[k]).abs().max().item() for k in whole) <= 1e-6, tower
    assert [r["loss"] for r in rows(tmp_path / "whole")] == pytest.approx([r["loss"] for r in rows(tmp_path / "split")])


@pytest.mark.parametrize(
    "case, words",
    [
        ("no dataset", "does not exist"),
        ("model without text encoder", "text_encoder/"),
        ("patches that do not tile", "patch_size"),
        ("batch of one", "batch_size must be >= 2"),
        ("eval-emoji --clip on a model", "not a train-clip output"),
        ("an image tower past memory", "trained weights with their gradients"),
    ],
)
def test_bad_input_is_one_line_exit_2(case, words, shapes, tiny_sd1, tmp_path, capsys):
    argv = ["train-clip", str(shapes), "--model", str(tiny_sd1), "--out", str(tmp_path / "o"), "--max-steps", "1"]
    if case == "no dataset":
        argv[1] = str(tmp_path / "none")
    elif case == "model without text encoder":
        (tmp_path / "empty").mkdir()
        argv[3] = str(tmp_path / "empty")
    elif case == "patches that do not tile":
        argv += ["--resolution", "40", "--vision", "patch_size=16"]
    elif case == "an image tower past memory":  # refused before it is built
        argv += [
            "--batch-size",
            "4",
            "--vision",
            "{hidden_size: 8192, intermediate_size: 32768, num_hidden_layers: 64, num_attention_heads: 8}",
        ]
    elif case == "batch of one":
        argv += ["--batch-size", "1"]
    else:
        argv = ["eval-emoji", str(shapes), "--clip", str(tiny_sd1)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("latentdiff: error:")]
    assert len(errors) == 1 and words in errors[0] and "Traceback" not in err, err


def test_config_errors_are_actionable():
    with pytest.raises(UsageError, match="--model"):
        ClipTrainConfig(dataset="d", out="o")
    with pytest.raises(UsageError, match="unknown CLIPVisionConfig"):
        ClipTrainConfig(dataset="d", out="o", model="m", vision={"num_channels": 4})
    with pytest.raises(UsageError, match="multiple of num_attention_heads"):
        ClipTrainConfig(dataset="d", out="o", model="m", vision={"hidden_size": 30, "num_attention_heads": 4})


def test_the_image_tower_serves_an_unclip_decoder_as_diffusers_runs_it(shapes, tiny_sd1, tiny_unclip, tmp_path):
    """A tiny Stable unCLIP folder with train-clip's image_encoder/ and feature_extractor/ in place of its
    own: our variations and diffusers' StableUnCLIPImg2ImgPipeline read it and draw the same pixels."""
    import shutil

    import diffusers

    from latentdiff import Pipeline
    from latentdiff.training.clip import train_clip

    train_clip(config(shapes, tiny_sd1, tmp_path / "run", max_steps=1, eval_train_images=0))
    model = tmp_path / "unclip"
    shutil.copytree(tiny_unclip, model)
    for part in ("image_encoder", "feature_extractor"):
        shutil.rmtree(model / part)
        shutil.copytree(tmp_path / "run" / part, model / part)
    pipe = Pipeline.from_pretrained(model, device="cpu", dtype="fp32")
    got = pipe("red circle", steps=2, width=32, height=32, seed=3, variations=str(shapes / "00.png"), guidance=1.0)
    ref = diffusers.StableUnCLIPImg2ImgPipeline.from_pretrained(model, dtype=torch.float32)
    ref.set_progress_bar_config(disable=True)
    expected = ref(
        image=Image.open(shapes / "00.png"), prompt="red circle", num_inference_steps=2, guidance_scale=1.0,
        width=32, height=32, generator=torch.Generator("cpu").manual_seed(3), output_type="np",
    ).images[0]  # fmt: skip
    assert ref.image_encoder.config.projection_dim == 32 and expected.std() * 255 > 5  # a picture, not a flat one
    assert np.abs(np.asarray(got[0], dtype=np.float32) - np.round(expected * 255)).max() <= 1


@pytest.mark.parametrize(
    "alts, words",
    [(5, "alt_texts must be a list of captions"), (["a"] * 65, "at most 64"), (["x" * 65_537], "at most 64")],
)
def test_bad_alt_texts_name_their_row(tmp_path, alts, words):
    from latentdiff.training.data.scan import scan_dataset

    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "red", "alt_texts": alts}))
    with pytest.raises(UsageError, match=f"metadata.jsonl row 1: .*{words}"):
        scan_dataset(tmp_path, 8)
