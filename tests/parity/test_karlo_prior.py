"""Karlo's prior format (diffusers' UnCLIPPipeline: prior/, text_encoder/, tokenizer/, prior_scheduler/
beside a pixel decoder and two SR stages): `--prior DIR` reads a saved UnCLIPPipeline folder, and our
prior sampling equals the image embedding UnCLIPPipeline's prior stage hands its decoder (caught at
its text_proj), on one tiny random model with the same seed."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def karlo(tmp_path_factory):
    from latentdiff.runtime.libraries import quiet_libraries

    quiet_libraries()
    from latentdiff.families.unclip_tiny import tiny_karlo

    pipe = tiny_karlo()
    pipe.set_progress_bar_config(disable=True)
    folder = tmp_path_factory.mktemp("models") / "karlo"
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe, folder


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_prior_matches_unclip_pipelines_prior_stage(karlo, guidance):
    from latentdiff.families.unclip import prior_embeddings
    from latentdiff.models.assemble import load_prior

    pipe, folder = karlo
    seen = []
    hook = pipe.text_proj.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["image_embeddings"]), with_kwargs=True)  # fmt: skip
    try:
        pipe("a red circle", prior_num_inference_steps=3, decoder_num_inference_steps=2, super_res_num_inference_steps=2,
             prior_guidance_scale=guidance, decoder_guidance_scale=guidance, generator=torch.Generator().manual_seed(9),
             output_type="np")  # fmt: skip
    finally:
        hook.remove()
    parts = load_prior(folder)
    assert parts["prior_scheduler"]["prediction_type"] == "sample"
    got = prior_embeddings(parts, ["a red circle"], 3, guidance, [torch.Generator().manual_seed(9)], True)
    assert got.shape == seen[0].shape == (1, 32)
    assert torch.allclose(got, seen[0], atol=1e-5), (got - seen[0]).abs().max()


def test_generate_takes_a_karlo_prior(karlo, tiny_unclip):
    from latentdiff import Pipeline

    _, folder = karlo
    images = Pipeline.from_pretrained(tiny_unclip)("a red circle", steps=2, prior=str(folder), prior_steps=2, seed=1)
    assert images[0].info["latentdiff"]["prior"] == str(folder)
