"""Qwen-Image and Z-Image as families, without running them: detection from a transformer's config
(as a config file names its class, and as a loaded config without the name), their guidance
scales, and the one-frame VAE seen as an image VAE."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize(
    "config, name",
    [
        ({"_class_name": "QwenImageTransformer2DModel"}, "qwen-image"),
        ({"axes_dims_rope": [16, 56, 56], "joint_attention_dim": 3584, "guidance_embeds": False}, "qwen-image"),
        ({"_class_name": "ZImageTransformer2DModel"}, "z-image"),
        ({"all_patch_size": [2], "cap_feat_dim": 2560}, "z-image"),
        ({"axes_dims_rope": [16, 56, 56], "joint_attention_dim": 4096, "pooled_projection_dim": 768}, "flux"),
    ],
)
def test_the_family_is_told_from_the_transformers_config(config, name):
    from latentdiff.families.registry import family_for

    assert family_for(config, {}).name == name


def test_guidance_scales_are_the_pipelines():
    from latentdiff.errors import UsageError
    from latentdiff.families.registry import family_named

    assert family_named("qwen-image").guidance(None, 4.0) == (4.0, None)  # true_cfg_scale, in the loop
    assert family_named("z-image").guidance(None, 0.0) == (1.0, None)  # pos + 0 (pos - neg): unguided
    assert family_named("z-image").guidance(None, 5.0) == (6.0, None)
    for name in ("qwen-image", "z-image"):
        with pytest.raises(UsageError, match="true_cfg 2 is for guidance-distilled models"):
            family_named(name).guidance(None, 4.0, true_cfg=2.0)


def test_the_frame_vae_normalises_per_channel_as_diffusers():
    from latentdiff.families.frame_vae import FrameVAE
    from latentdiff.families.qwen_tiny import tiny_qwen_vae

    inner = tiny_qwen_vae(seed=1)
    vae = FrameVAE(inner)
    assert (vae.config.latent_channels, vae.config.scaling_factor, vae.config.shift_factor) == (4, 1.0, None)
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 4  # the factor models.components reads
    pixels = torch.rand(1, 3, 16, 24) * 2 - 1
    z = vae.encode(pixels).latent_dist.sample(generator=torch.Generator().manual_seed(0))
    raw = inner.encode(pixels[:, :, None]).latent_dist.sample(generator=torch.Generator().manual_seed(0))[:, :, 0]
    mean, std = (torch.tensor(inner.config[k]).view(1, 4, 1, 1) for k in ("latents_mean", "latents_std"))
    assert z.shape == (1, 4, 4, 6) and torch.allclose(z, (raw - mean) / std)
    decoded = inner.decode((z * std + mean)[:, :, None]).sample[:, :, 0]
    assert torch.allclose(vae.decode(z).sample, decoded)
