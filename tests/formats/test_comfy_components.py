"""ComfyUI's models folder as --components (formats/comfy_models.py): a Flux.1 transformer file
with the CLIP-L, T5-XXL (scaled fp8) and ae.safetensors files a ComfyUI install keeps, found by their
tensors under names of the user's choosing, gives the pixels of the diffusers folder made of the
same parts; two T5 files are one line naming both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

FP8 = torch.float8_e4m3fn


def _tiny_parts(seed: int = 5):
    """Tiny parts in the released proportions the files are read with (CLIP heads 64 wide, T5 v1.1's
    gated-gelu, the VAE's norms in groups of 32, Flux's rotary split), with the shipped CLIP tokenizer."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from latentdiff.families.flux_tiny import t5_tokenizer
    from latentdiff.families.released import clip_tokenizer
    from latentdiff.families.sd import WORDS

    torch.manual_seed(seed)
    t5_tok = t5_tokenizer(WORDS)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=37, num_hidden_layers=1,
                                        num_attention_heads=1, hidden_act="quick_gelu", projection_dim=64,
                                        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))  # fmt: skip
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                                 relative_attention_num_buckets=32, relative_attention_max_distance=128,
                                 feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
                                 tie_word_embeddings=False, layer_norm_epsilon=1e-6))  # fmt: skip
    vae = AutoencoderKL(block_out_channels=[32, 32], down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, layers_per_block=1, latent_channels=16,
                        norm_num_groups=32, use_quant_conv=False, use_post_quant_conv=False,
                        scaling_factor=0.3611, shift_factor=0.1159)  # fmt: skip
    transformer = FluxTransformer2DModel(in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=32,
                                         num_attention_heads=1, joint_attention_dim=32, pooled_projection_dim=64,
                                         guidance_embeds=True, axes_dims_rope=(4, 14, 14))  # fmt: skip
    return dict(unet=transformer.eval(), vae=vae.eval(), text_encoder=clip.eval(), tokenizer=clip_tokenizer(False),
                text_encoder_2=t5.eval(), tokenizer_2=t5_tok)  # fmt: skip


def _scaled_fp8(sd: dict) -> dict:
    """ComfyUI's scaled fp8 (t5xxl_fp8_e4m3fn_scaled.safetensors): each matrix over its scale."""
    out = {"scaled_fp8": torch.zeros(0, dtype=FP8)}
    for k, v in sd.items():
        scale = torch.tensor(0.5) if v.ndim == 2 and k.endswith(".weight") else None
        out[k] = (v / scale if scale is not None else v).to(FP8)
        if scale is not None:
            out[k.removesuffix("weight") + "scale_weight"] = scale
    return out


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    from safetensors.torch import save_file

    from latentdiff.formats.ldm_keys import vae_to_ldm
    from latentdiff.formats.transformer_keys import to_original

    root = tmp_path_factory.mktemp("ComfyUI")
    parts = _tiny_parts()
    models = root / "models"
    for d in ("text_encoders", "clip", "vae", "diffusion_models"):
        (models / d).mkdir(parents=True)
    parts["tokenizer_2"].save_pretrained(str(root / "comfy" / "text_encoders" / "t5_tokenizer"))
    clip = {"text_model." + k: v for k, v in parts["text_encoder"].state_dict().items()}
    save_file(clip, str(models / "clip" / "my_clip.safetensors"))  # names are the user's; tensors tell
    t5 = _scaled_fp8(parts["text_encoder_2"].state_dict())
    save_file(t5, str(models / "text_encoders" / "t5xxl_fp8_e4m3fn_scaled.safetensors"))
    ldm = vae_to_ldm(parts["vae"].state_dict(), dict(parts["vae"].config))
    save_file(
        {k.removeprefix("first_stage_model."): v.contiguous() for k, v in ldm.items()},
        str(models / "vae" / "ae.safetensors"),
    )
    f = models / "diffusion_models" / "flux1-dev.safetensors"
    save_file({k: v.contiguous() for k, v in to_original(parts["unet"].state_dict(), "flux").items()}, str(f))
    return root, parts, f


def _pixels(pipe) -> np.ndarray:
    pipe.progress = False
    return np.asarray(pipe("a red apple", steps=2, seed=4, width=32, height=32)[0], dtype=np.int16)


def test_flux_file_with_comfyui_models_folder(comfy, tmp_path):
    from latentdiff import Pipeline
    from latentdiff.families.flux_tiny import SCHEDULERS
    from latentdiff.formats.transformer_parts import upcast_fp8
    from latentdiff.models.components import Components, save_components

    root, parts, f = comfy
    loaded = Pipeline.from_pretrained(f, device="cpu", dtype="fp32", components=root / "models")
    t5 = parts["text_encoder_2"]
    t5.load_state_dict({k: v.float() for k, v in upcast_fp8(_scaled_fp8(t5.state_dict())).items()}, strict=False)
    got = loaded.components.text_encoder_2.state_dict()
    assert all(torch.equal(got[k], v) for k, v in t5.state_dict().items())
    scheduler = {"_class_name": "FlowMatchEulerDiscreteScheduler", **SCHEDULERS["flux-dev"]}
    save_components(
        Components(**parts, scheduler_config=scheduler, defaults={}), tmp_path / "ref", scheduler["_class_name"]
    )
    ref = Pipeline.from_pretrained(tmp_path / "ref", device="cpu", dtype="fp32")
    want = _pixels(ref)
    assert np.array_equal(_pixels(loaded), want) and want.std() > 5


def test_two_t5_files_are_one_line(comfy, tmp_path, run_main):
    import shutil

    root, _, f = comfy
    other = root / "models" / "clip" / "t5xxl_fp16.safetensors"
    shutil.copy(root / "models" / "text_encoders" / "t5xxl_fp8_e4m3fn_scaled.safetensors", other)
    try:
        out = tmp_path / "out"
        argv = ["generate", "x", "--model", f, "--components", root / "models", "--steps", "1", "--quiet", "--out", out]
        code, stdout, err = run_main([str(a) for a in argv])
        assert code == 2 and stdout == "" and len(err.strip().splitlines()) == 1 and not out.exists(), err
        assert "holds 2 T5-XXL files" in err and "t5xxl_fp16.safetensors" in err and "--text-encoder FILE" in err
        code, stdout, err = run_main([str(a) for a in [*argv[:-1], tmp_path / "o2", "--text-encoder", other]])
        assert code == 0, err
    finally:
        other.unlink()
