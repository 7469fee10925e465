"""Memory for the transformer families (issue 27, point 3): offloaded components give the same
pixels, a model whose weights cannot fit is refused in one line before loading, and each family's
--dtype rule. Tiny random models, fp32, CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentdiff.errors import UsageError

W, H = 32, 32


def _pixels(path, image=None, **load):
    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(path, device="cpu", dtype="fp32", **load)
    pipe.progress = False
    start = {} if image is None else {"image": image, "strength": 0.6}
    images = pipe(["a red apple", "a blue car"], steps=3, width=W, height=H, seed=3, num_images=1, **start)
    return pipe, np.stack([np.asarray(i, dtype=np.int16) for i in images])


def test_offloaded_components_give_the_same_pixels(tiny_klein):
    """img2img: the VAE encodes (through FLUX.2's view of it) as well as decodes under the hooks."""
    from PIL import Image

    picture = Image.fromarray((np.random.RandomState(0).rand(H, W, 3) * 255).astype(np.uint8))
    _, want = _pixels(tiny_klein, picture)
    assert want.std() > 5  # a real picture, not a flat one that would match anything
    for mode in ("model", "sequential"):
        pipe, got = _pixels(tiny_klein, picture, offload=mode)
        assert np.array_equal(got, want), mode
        hooked = [m for m in (pipe.components.unet, pipe.components.text_encoder) if hasattr(m, "_hf_hook")]
        assert len(hooked) == 2, mode  # the hooks were there: the same pixels did not come from skipping them
    assert next(pipe.components.unet.parameters()).device.type == "meta"  # sequential: weights wait in RAM


def test_offloaded_pipeline_is_not_moved(tiny_klein):
    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(tiny_klein, device="cpu", dtype="fp32", offload="model")
    with pytest.raises(UsageError, match="an offloaded pipeline cannot be moved"):
        pipe.to(dtype="fp32")


def test_model_offload_releases_after_each_batch(tiny_klein, monkeypatch):
    """The next batch starts from the text encoders: every hook's offload runs after a batch."""
    from accelerate.hooks import UserCpuOffloadHook

    offloaded = []
    real = UserCpuOffloadHook.offload
    monkeypatch.setattr(UserCpuOffloadHook, "offload", lambda self: offloaded.append(self.model) or real(self))
    pipe, _ = _pixels(tiny_klein, offload="model")
    c = pipe.components
    assert {id(m) for m in (c.text_encoder, c.unet, c.vae.vae)} <= {
        id(m) for m in offloaded
    }  # FLUX.2's VAE: in its view


def test_unknown_offload_is_one_line(tiny_klein):
    from latentdiff import Pipeline

    with pytest.raises(UsageError, match="unknown offload 'disk'; use none, model, sequential"):
        Pipeline.from_pretrained(tiny_klein, device="cpu", dtype="fp32", offload="disk")


def test_weights_that_cannot_fit_are_refused_before_loading(tiny_klein, monkeypatch):
    import latentdiff.runtime.memory as memory
    from latentdiff import Pipeline

    built = []
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)
    monkeypatch.setattr("latentdiff.formats.load.build", lambda *a, **k: built.append(a))
    with pytest.raises(UsageError) as e:
        Pipeline.from_pretrained(tiny_klein, device="cpu", dtype="fp32")
    line = str(e.value)
    assert "\n" not in line and not built  # one line, nothing read
    assert "FLUX.2 in fp32 needs about" in line and "MiB in RAM for its weights (" in line and "transformer" in line
    assert "only 0.0 MiB is available" in line
    assert "--dtype bf16" in line and "--offload" not in line  # no GPU to offload from


def test_refusal_counts_the_device_and_ram_as_offload_places_them():
    from latentdiff.runtime.offload import weights_need

    sizes = {"transformer": 24, "text_encoder_2": 9, "vae": 1}
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert weights_need(sizes, cpu, "model") == (0, 34)  # on the CPU everything is in RAM
    assert weights_need(sizes, gpu, "none") == (34, 0)  # loaded straight to the GPU
    assert weights_need(sizes, gpu, "model") == (24, 34)  # the largest on the GPU, all in RAM
    assert weights_need(sizes, gpu, "sequential") == (0, 34)


def test_gpu_refusal_names_offload(monkeypatch):
    import latentdiff.runtime.memory as memory
    from latentdiff.families.registry import FAMILIES
    from latentdiff.formats.memory_check import memory_options
    from latentdiff.runtime.placement import Placement

    gpu = torch.device("cuda")
    place = Placement(gpu, torch.bfloat16, torch.bfloat16, False)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 8 * 2**30 if device.type == "cuda" else 64 * 2**30)
    sizes = {"transformer": 23 * 2**30, "text_encoder_2": 9 * 2**30}
    with pytest.raises(
        UsageError, match=r"needs about 32.0 GiB on cuda .* only 8.0 GiB is available; .*GGUF.*--offload model"
    ):
        memory.check_weights_fit("Flux.1", sizes, gpu, (32 * 2**30, 0), memory_options(FAMILIES["flux"], place, "none"))
    memory.check_weights_fit("Flux.1", sizes, gpu, (0, 32 * 2**30), "")  # sequential: fits in 64 GiB of RAM


# ---- --dtype rules: one test per row of docs/models.md's table --------------------------------


def _rule(name, unet=None):
    from latentdiff.families.registry import FAMILIES

    return FAMILIES[name].dtype_rule(unet or {})


def _dtype(name, family, device="cuda", bf16=True, monkeypatch=None, unet=None):
    from latentdiff.runtime.placement import family_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    return family_dtype(name, torch.device(device), _rule(family, unet))


@pytest.mark.parametrize("family", ["flux", "chroma", "flux2", "qwen-image", "z-image"])
def test_bf16_first_families_take_bf16_on_a_gpu_that_computes_it(family, monkeypatch):
    assert _dtype("auto", family, monkeypatch=monkeypatch) == "bf16"


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3"])
def test_unet_families_and_sd3_take_fp16_on_a_gpu(family, monkeypatch):
    assert _dtype("auto", family, monkeypatch=monkeypatch) == "fp16"


def test_without_gpu_bf16_flux_falls_back_to_fp16_and_qwen_to_fp32(monkeypatch, capsys):
    assert _dtype("auto", "flux", bf16=False, monkeypatch=monkeypatch) == "fp16"
    assert _dtype("auto", "qwen-image", bf16=False, monkeypatch=monkeypatch) == "fp32"


@pytest.mark.parametrize("family", ["qwen-image", "z-image"])
def test_fp16_refused_where_the_family_overflows(family, monkeypatch):
    with pytest.raises(UsageError, match="overflows fp16 .*--dtype bf16"):
        _dtype("fp16", family, monkeypatch=monkeypatch)


def test_flux_fill_refuses_fp16_and_dev_warns(monkeypatch):
    with pytest.raises(UsageError, match="Flux.1 overflows fp16"):
        _dtype("fp16", "flux", monkeypatch=monkeypatch, unet={"in_channels": 384, "out_channels": 64})
    from latentdiff.runtime import placement

    said = []
    monkeypatch.setattr(placement, "notice", said.append)
    assert _dtype("fp16", "flux", monkeypatch=monkeypatch, unet={"in_channels": 64}) == "fp16"
    assert said and "exceed fp16's range" in said[0]


def test_cpu_keeps_its_own_auto(monkeypatch):
    assert _dtype("auto", "qwen-image", device="cpu", monkeypatch=monkeypatch) == "auto"  # resolve_dtype decides


def test_fp16_refusal_comes_before_loading(tiny_klein, monkeypatch):
    from latentdiff import Pipeline
    from latentdiff.families.flux2 import Flux2

    monkeypatch.setattr(Flux2, "fp16", "refuse")
    monkeypatch.setattr("latentdiff.formats.load.build", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(UsageError, match="overflows fp16"):
        Pipeline.from_pretrained(tiny_klein, device="cpu", dtype="fp16")


def test_generate_offload_flag(tiny_klein, tmp_path, generate):
    """`generate --offload model` writes the image `--offload none` writes; an unknown mode is one line, exit 2."""
    from PIL import Image

    images = []
    for mode in ("none", "model"):
        code, out, err = generate(tiny_klein, tmp_path / mode, "--width", "32", "--height", "32", "--offload", mode)
        assert code == 0, err
        images.append(np.asarray(Image.open(out.strip())))
    assert np.array_equal(*images)
    code, out, err = generate(tiny_klein, tmp_path / "x", "--offload", "disk")
    assert code == 2 and "--offload" in err and "disk" in err and not (tmp_path / "x").exists()
