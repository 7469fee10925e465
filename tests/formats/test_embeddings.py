"""--embedding: textual inversions in the A1111 .pt/.safetensors and diffusers layouts, against
diffusers' load_textual_inversion; bad files are one clear error."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from latentdiff import Pipeline
from latentdiff.errors import ModelError, UsageError


def vectors(n=2, dim=32, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def a1111_pt(path, vecs):
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vecs}, "name": path.stem, "step": 500}, path)
    return path


def load(model, *embeddings):
    p = Pipeline.from_pretrained(model, device="cpu", dtype="fp32", embeddings=[str(e) for e in embeddings])
    p.progress = False
    return p


@pytest.mark.parametrize("layout", ["a1111_pt", "a1111_safetensors", "diffusers"])
def test_vectors_land_on_the_new_tokens(tiny_sd1, tmp_path, layout):
    vecs = vectors(1 if layout == "diffusers" else 3)
    if layout == "a1111_pt":
        f = a1111_pt(tmp_path / "mystyle.pt", vecs)
    elif layout == "a1111_safetensors":
        f = tmp_path / "mystyle.safetensors"
        save_file({"emb_params": vecs}, f)
    else:
        f = tmp_path / "learned_embeds.safetensors"
        save_file({"<mystyle>": vecs[0]}, f)
    spec = f"{f}:mystyle" if layout == "diffusers" else f
    pipe = load(tiny_sd1, spec)
    c = pipe.components
    tokens = ["mystyle"] + [f"mystyle_{i}" for i in range(1, len(vecs))]
    rows = c.text_encoder.get_input_embeddings().weight[c.tokenizer.convert_tokens_to_ids(tokens)]
    assert torch.equal(rows, vecs)
    assert c.tokenizer("a MyStyle cat", add_special_tokens=False).input_ids[1] == c.tokenizer.convert_tokens_to_ids(
        "mystyle"
    )
    assert pipe.addons.embeddings[0]["token"] == "mystyle" and pipe.addons.embeddings[0]["vectors"] == len(vecs)


def test_pixels_match_diffusers_load_textual_inversion(tiny_sd1, pipe_sd1, tmp_path):
    from diffusers import StableDiffusionPipeline

    from latentdiff.sampling.loop import make_scheduler

    f = a1111_pt(tmp_path / "mystyle.pt", vectors(3))
    ours = load(tiny_sd1, f)
    mine = ours("a photo of mystyle", negative_prompt="mystyle", steps=3, guidance=5.0, seed=2, scheduler="ddim")[0]
    ref = StableDiffusionPipeline.from_pretrained(tiny_sd1, safety_checker=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(ours.components.scheduler_config, "ddim")
    ref.load_textual_inversion(str(f), token="mystyle")
    theirs = ref(
        "a photo of mystyle",
        negative_prompt="mystyle",
        num_inference_steps=3,
        guidance_scale=5.0,
        generator=[torch.Generator("cpu").manual_seed(2)],
    ).images[0]
    assert np.abs(np.asarray(mine, dtype=int) - np.asarray(theirs, dtype=int)).max() <= 1
    without = pipe_sd1("a photo of a cat", steps=2, seed=2)[0]
    assert np.array_equal(np.asarray(ours("a photo of a cat", steps=2, seed=2)[0]), np.asarray(without))


def test_embeddings_are_recorded_and_replayed(tiny_sd1, tmp_path, capsys):
    from helpers import made_and_replayed

    from latentdiff.models.fingerprint import short_hash

    f = tmp_path / "style.safetensors"
    save_file({"emb_params": vectors(2)}, f)
    params, fields = made_and_replayed(capsys, tmp_path, "a style cat", "--model", tiny_sd1, "--embedding", f)
    assert params["embeddings"][0]["hash"] == short_hash(f, whole_file=True)
    assert fields["TI hashes"] == f"style: {short_hash(f, whole_file=True)}"


def test_bad_embeddings(tiny_sd1, tmp_path, capsys):
    import os

    from helpers import fails

    wide = tmp_path / "wide.safetensors"
    save_file({"emb_params": vectors(2, dim=768)}, wide)
    assert "has vectors 768 wide; this model's text encoder takes 32" in fails(
        capsys, "x", "--model", tiny_sd1, "--embedding", wide
    )
    assert "does not exist" in fails(capsys, "x", "--model", tiny_sd1, "--embedding", tmp_path / "none.pt")

    class Payload:
        def __reduce__(self):
            return os.system, ("echo owned",)

    evil = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": Payload()}}, evil)
    assert "refused to load" in fails(capsys, "x", "--model", tiny_sd1, "--embedding", evil)
    fits = tmp_path / "fits.safetensors"
    save_file({"emb_params": vectors(2)}, fits)
    with pytest.raises(UsageError, match="already taken"):
        load(tiny_sd1, f"{fits}:x", f"{fits}:x")
    with pytest.raises(ModelError, match="no textual-inversion vectors"):
        save_file({"a": torch.zeros(2), "b": torch.zeros(2)}, tmp_path / "two.safetensors")
        load(tiny_sd1, tmp_path / "two.safetensors")


def test_sdxl_clip_l_and_clip_g_match_diffusers(tiny_sdxl, tmp_path):
    """An SDXL embedding file (clip_l for the first encoder, clip_g for the second) against diffusers'
    load_textual_inversion, called once per encoder as its documentation shows."""
    from diffusers import StableDiffusionXLPipeline

    from latentdiff.sampling.loop import make_scheduler

    f = tmp_path / "xlstyle.safetensors"
    save_file({"clip_l": vectors(2, 32, seed=1), "clip_g": vectors(2, 40, seed=2)}, f)
    ours = load(tiny_sdxl, f)
    size = dict(width=64, height=64)
    mine = ours(
        "a photo of xlstyle", negative_prompt="xlstyle", steps=3, guidance=5.0, seed=2, scheduler="ddim", **size
    )[0]
    ref = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl, add_watermarker=False)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(ours.components.scheduler_config, "ddim")
    ref.load_textual_inversion(
        vectors(2, 32, seed=1), token=["xlstyle", "xlstyle_1"], text_encoder=ref.text_encoder, tokenizer=ref.tokenizer
    )
    ref.load_textual_inversion(
        vectors(2, 40, seed=2),
        token=["xlstyle", "xlstyle_1"],
        text_encoder=ref.text_encoder_2,
        tokenizer=ref.tokenizer_2,
    )
    # diffusers writes the multi-vector token out itself (maybe_convert_prompt), for each tokenizer
    theirs = ref(
        "a photo of xlstyle",
        negative_prompt="xlstyle",
        num_inference_steps=3,
        guidance_scale=5.0,
        generator=[torch.Generator("cpu").manual_seed(2)],
        **size,
    ).images[0]
    assert np.asarray(mine).std() > 5
    assert np.abs(np.asarray(mine, dtype=int) - np.asarray(theirs, dtype=int)).max() <= 1
    plain = load(tiny_sdxl)("a photo of xlstyle", steps=3, guidance=5.0, seed=2, scheduler="ddim", **size)[0]
    assert np.abs(np.asarray(mine, dtype=int) - np.asarray(plain, dtype=int)).max() > 0  # the vectors matter
