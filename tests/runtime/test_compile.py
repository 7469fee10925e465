"""The CUDA speed levers, checked on the CPU where their logic does not need a GPU: compile modes,
a sampling loop without host syncs, the fp16 VAE's NaN guard, fused AdamW's construction and LoRA's
frozen weights in the compute dtype. tests/runtime/test_cuda.py runs the same levers on a GPU."""

import numpy as np
import pytest
import torch
from conftest import run_cli
from helpers import cfg, max_diff, weights

import latentdiff.runtime.compile as accel
from latentdiff import Pipeline, UsageError
from latentdiff.families.clip import Embeddings
from latentdiff.families.unet import UNetCall
from latentdiff.runtime.placement import vae_dtype
from latentdiff.sampling.loop import denoise, make_scheduler

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_compile_values_and_modes():
    assert accel.compile_mode(False) is None and accel.compile_mode(None) is None
    assert accel.compile_mode(True) == "auto" and accel.compile_mode(" Max-Autotune ") == "max-autotune"
    with pytest.raises(UsageError, match="unknown compile mode"):
        accel.compile_mode("fastest")
    assert accel.resolve_mode("auto", CUDA) == "reduce-overhead" and accel.resolve_mode("auto", CPU) == "default"
    assert accel.inductor_options("default", CPU) == {}  # fp32: AOTAutograd's disk cache stays on
    assert accel.inductor_options("default", CPU, dtype=torch.bfloat16) == {"freezing": True}
    assert accel.inductor_options("reduce-overhead", CUDA) == {"triton.cudagraphs": True}
    assert "triton.cudagraphs" not in accel.inductor_options("reduce-overhead", CUDA, cudagraphs=False)
    assert accel.inductor_options("max-autotune", CUDA)["max_autotune"] is True


@pytest.mark.skipif(__import__("importlib").util.find_spec("torchao") is not None, reason="torchao is installed")
def test_fp8_without_torchao_is_one_clear_line(tiny_sd1, tmp_path):
    with pytest.raises(UsageError, match="needs torchao"):
        accel.compile_mode("fp8")
    r = run_cli("generate", "a red apple", "--model", tiny_sd1, "--compile-mode", "fp8", "--out", tmp_path, "--quiet")
    assert r.returncode == 2 and "needs torchao" in r.stderr and "Traceback" not in r.stderr


class MetaUNet(torch.nn.Module):
    """Returns a (meta) noise prediction shaped like its input; checks where the timestep lives."""

    dtype = torch.float32

    def forward(self, x, t, encoder_hidden_states=None, added_cond_kwargs=None, **kw):
        assert t.device == x.device, "the UNet's timestep must be on the latents' device"
        from types import SimpleNamespace

        return SimpleNamespace(sample=torch.empty_like(x))


SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "skip_prk_steps": True,
    "set_alpha_to_one": False,
    "clip_sample": False,
}


def _meta_run(name: str, scheduler_device=None):
    """denoise on meta tensors: reading a value of one on the host (.item(), bool(), indexing a CPU
    tensor with it) raises, as a host sync would stall a GPU."""
    sched = make_scheduler(SCHEDULER_CONFIG, name)
    sched.set_timesteps(4, device=scheduler_device)
    latents = torch.empty(2, 4, 8, 8, device="meta")
    cond = torch.empty(2, 7, 16, device="meta")
    gens = [torch.Generator().manual_seed(s) for s in range(2)]
    return denoise(
        UNetCall(MetaUNet()), sched, latents, Embeddings(cond), Embeddings(torch.empty_like(cond)), 5.0, gens
    )


@pytest.mark.parametrize("name", ["pndm", "ddim", "ddpm", "euler", "euler_a", "heun", "lms", "dpm++2m", "unipc"])
def test_sampling_loop_reads_no_device_value_per_step(name):
    assert _meta_run(name).device.type == "meta"


def test_the_meta_check_catches_device_side_scheduler_values():
    with pytest.raises((RuntimeError, NotImplementedError)):  # the detector itself works
        _meta_run("pndm", scheduler_device="meta")


def test_pipeline_keeps_scheduler_timesteps_on_the_cpu(pipe_sd1, monkeypatch):
    import latentdiff.workflows.text_to_image as text_to_image

    seen = []

    def spy(model, scheduler, *a, **k):
        seen.append(scheduler.timesteps.device.type)
        return denoise(model, scheduler, *a, **k)

    monkeypatch.setattr(text_to_image, "denoise", spy)
    pipe_sd1("a red apple", steps=2, seed=0)
    assert seen == ["cpu"]


def test_vae_dtype_tries_fp16_on_cuda_only():
    asks_fp32 = {"force_upcast": True}
    assert vae_dtype(torch.float16, asks_fp32, CUDA) == torch.float16
    assert vae_dtype(torch.float16, asks_fp32, "cuda:0") == torch.float16
    assert vae_dtype(torch.float16, asks_fp32, CPU) == torch.float32
    assert vae_dtype(torch.float16, {"force_upcast": False}, CPU) == torch.float16
    assert vae_dtype(torch.bfloat16, asks_fp32, CPU) == torch.bfloat16


def test_overflowing_fp16_vae_is_redone_in_fp32_and_then_kept_there(tiny_sd1):
    """What CUDA does with a force_upcast VAE (fp16 first, fp32 redo), forced here on the CPU."""
    pipe = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp16")
    pipe.progress = False
    vae = pipe.components.vae
    vae.register_to_config(force_upcast=True)
    vae.to(torch.float16)  # as vae_dtype leaves it on CUDA
    with torch.no_grad():  # activations past fp16's 65504 early in the decoder
        vae.decoder.conv_in.weight.fill_(1000.0)
        vae.decoder.conv_in.bias.fill_(60000.0)
        z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        assert not torch.isfinite(vae.decode(z.half()).sample).all(), "the VAE must overflow in fp16 for this test"
    with pytest.warns(UserWarning, match="keeping this VAE in fp32"):
        first = pipe("a red apple", steps=2, seed=1)[0]
    assert vae.dtype == torch.float32 and np.asarray(first).std() > 0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second fp16 attempt, no second warning
        second = pipe("a red apple", steps=2, seed=1)[0]
    assert np.array_equal(np.asarray(first), np.asarray(second))


def test_fused_adamw_is_cuda_only_and_builds_on_cpu_params():
    assert accel.adamw_kwargs(False) == {} and accel.adamw_kwargs(True) == {"fused": True}
    # On CUDA the optimizer is built before accelerate moves the weights: fused must accept CPU ones.
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1, **accel.adamw_kwargs(True))
    p.grad = torch.ones(3)
    opt.step()
    assert (p.detach() < 1).all()


def test_lora_frozen_weights_take_the_compute_dtype():
    from latentdiff.training.loop import frozen_in_compute_dtype

    m = torch.nn.Linear(4, 4)
    m.bias.requires_grad_(False)
    frozen_in_compute_dtype([m], torch.bfloat16)
    assert m.weight.dtype == torch.float32 and m.bias.dtype == torch.bfloat16


@pytest.mark.skipif(
    not __import__("latentdiff.runtime.device", fromlist=["cpu_bf16"]).cpu_bf16().runs,
    reason="torch cannot compute in bf16 on this CPU",
)
def test_lora_in_bf16_resumes_exactly_with_frozen_weights_cast(dataset, tiny_sd1, tmp_path):
    """The frozen base weights are re-read (and cast) on resume: the resumed run ends where a straight one does."""
    from latentdiff.training.loop import finetune

    finetune(cfg(dataset, tiny_sd1, tmp_path / "straight", mixed_precision="bf16"))
    finetune(cfg(dataset, tiny_sd1, tmp_path / "resumed", mixed_precision="bf16", max_steps=2))
    finetune(cfg(dataset, tiny_sd1, tmp_path / "resumed", mixed_precision="bf16", resume=True))
    assert max_diff(weights(tmp_path / "straight"), weights(tmp_path / "resumed")) <= 1e-6


@pytest.mark.skipif(
    not __import__("latentdiff.runtime.device", fromlist=["cpu_bf16"]).cpu_bf16().runs,
    reason="torch cannot compute in bf16 on this CPU",
)
def test_runs_in_one_process_may_change_precision(dataset, tiny_sd1, tmp_path):
    """accelerate fixes the mixed precision per process; the Python API must not (a notebook's second run)."""
    from latentdiff.training.loop import finetune

    for i, precision in enumerate(["no", "bf16", "no"]):
        out = finetune(
            cfg(dataset, tiny_sd1, tmp_path / str(i), mixed_precision=precision, max_steps=1, checkpoint_every=1)
        )
        assert __import__("yaml").safe_load((out / "config.yaml").read_text())["mixed_precision"] == precision


def test_cuda_graph_wrapper_hands_out_copies_of_the_pooled_output(monkeypatch):
    """A CUDA graph's output lives in its pool and the next replay overwrites it; schedulers keep
    earlier predictions, so each call must start a graph step and return a copy (simulated on the CPU)."""
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    class Doubler(torch.nn.Module):
        def forward(self, x):
            return UNet2DConditionOutput(sample=2 * x)

    pool, marks = torch.zeros(3), []

    def fake_compile(fn, options=None):
        def replay(x):
            pool.copy_(fn(x).sample)
            return UNet2DConditionOutput(sample=pool)

        return replay

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    unet = Doubler()
    accel._compile_with_cuda_graphs(unet, {"triton.cudagraphs": True})
    first = unet(torch.ones(3)).sample
    second = unet(torch.full((3,), 5.0)).sample
    assert first.tolist() == [2.0] * 3 and second.tolist() == [10.0] * 3 and len(marks) == 2
