"""One engine's side of benchmarks/cpu_peers.py: load, warm up, time one txt2img call, exit.

    PYTHON benchmarks/support/peer_engine.py ENGINE OUT.png --folder DIR --file F.safetensors \
        --threads 2 --steps 6 --size 256 [--variant int8] [--comfy-dir DIR] [--ov-cache DIR]

Runs under the engine's own interpreter (OpenVINO and stable-diffusion.cpp live in their own
environments), so it imports only the standard library at the top. It loads the model (not timed
into the result), makes a 1-step call of the same size (the warm-up: kernels chosen, buffers sized,
graphs compiled), then the timed N-step call while a thread samples this process's RSS, saves the
image and writes OUT.png.json: load_s, warmup_s, call_s, call_peak_rss_mib and the engine's version.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class PeakRSS:
    """The largest RSS seen every 5 ms while the block runs (stdlib only; cf. common.PeakRSS)."""

    def __enter__(self):
        self.peak, self._stop = rss_mib(), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def euler_generator(a):
    import torch

    return torch.Generator("cpu").manual_seed(a.seed)


def load_latentdiff(a):
    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(a.file, device="cpu", dtype="fp32")
    pipe.threads, pipe.progress = a.threads, False

    def call(steps):
        return pipe(
            a.prompt, steps=steps, guidance=a.guidance, width=a.size, height=a.size, seed=a.seed, scheduler="euler"
        )[0]

    return call, "latentdiff"


def _diffusers_call(pipe, a):
    def call(steps):
        return pipe(
            a.prompt,
            num_inference_steps=steps,
            guidance_scale=a.guidance,
            height=a.size,
            width=a.size,
            generator=euler_generator(a),
        ).images[0]

    return call


def load_diffusers(a):
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    torch_threads(a.threads)
    pipe = StableDiffusionPipeline.from_pretrained(
        a.folder, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return _diffusers_call(pipe, a), "diffusers"


def load_openvino(a):
    """optimum-intel's pipeline: exported once from the diffusers folder (int8: weights compressed
    by NNCF at export), reshaped to the static size and batch, compiled for the CPU."""
    from diffusers import EulerDiscreteScheduler
    from optimum.intel import OVStableDiffusionPipeline, OVWeightQuantizationConfig

    ir = Path(a.ov_cache)
    if not (ir / "model_index.json").is_file():
        quant = OVWeightQuantizationConfig(bits=8) if a.variant == "int8" else None
        fp32 = Path(a.ov_cache.removesuffix("-" + a.variant)) if a.variant else None  # compress it, not export again
        source = str(fp32) if fp32 and (fp32 / "model_index.json").is_file() else a.folder
        export = source == a.folder
        pipe = OVStableDiffusionPipeline.from_pretrained(
            source, export=export, compile=False, quantization_config=quant
        )
        pipe.save_pretrained(ir)
    config = {"INFERENCE_NUM_THREADS": str(a.threads), "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    pipe = OVStableDiffusionPipeline.from_pretrained(ir, compile=False, ov_config=config)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.reshape(batch_size=1, height=a.size, width=a.size, num_images_per_prompt=1)
    pipe.compile()
    pipe.set_progress_bar_config(disable=True)
    return _diffusers_call(pipe, a), f"optimum-intel {version('optimum-intel')}, openvino {version('openvino')}"


def load_sdcpp(a):
    from stable_diffusion_cpp import StableDiffusion

    wtype = {"": "f32", "q8_0": "q8_0"}[a.variant]
    if unet_width(a.file) != 320:  # its SD 1.x graph has the released widths built in
        raise SystemExit(f"stable-diffusion.cpp builds SD 1.x at 320 channels; this UNet has {unet_width(a.file)}")
    sd = StableDiffusion(
        model_path=a.file, n_threads=a.threads, wtype=wtype, verbose=bool(os.environ.get("PEER_VERBOSE"))
    )

    def call(steps):
        return sd.generate_image(
            prompt=a.prompt,
            cfg_scale=a.guidance,
            width=a.size,
            height=a.size,
            sample_method="euler",
            sample_steps=steps,
            seed=a.seed,
        )[0]

    return call, f"stable-diffusion-cpp-python {version('stable-diffusion-cpp-python')}"


def load_comfy(a):
    """ComfyUI's engine without its server: its checkpoint loader and the nodes a default graph
    runs (CLIPTextEncode, EmptyLatentImage, KSampler euler/normal, VAEDecode)."""
    sys.path.insert(0, a.comfy_dir)
    from comfy.cli_args import args as comfy_args

    comfy_args.cpu = True
    torch_threads(a.threads)
    import comfy.sd
    import nodes
    from PIL import Image

    same_width_as(a.file)
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(a.file, output_vae=True, output_clip=True)

    def call(steps):
        # Both prompts are encoded inside the call, as the other engines do (a server would cache them).
        pos, neg = (nodes.CLIPTextEncode().encode(clip, text)[0] for text in (a.prompt, ""))
        latent = nodes.EmptyLatentImage().generate(a.size, a.size, 1)[0]
        out = nodes.common_ksampler(model, a.seed, steps, a.guidance, "euler", "normal", pos, neg, latent)[0]
        pixels = vae.decode(out["samples"])[0]  # (H, W, 3) in [0, 1]
        return Image.fromarray((pixels.clamp(0, 1) * 255).round().byte().numpy())

    return call, "ComfyUI " + Path(a.comfy_dir, "comfyui_version.py").read_text().split("=")[-1].strip().strip("\"'")


def unet_width(file: str) -> int:
    """The UNet's first channel count in an A1111-layout file (SD1.5: 320), read from the header alone."""
    with open(file, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return header["model.diffusion_model.input_blocks.0.0.weight"]["shape"][0]


def same_width_as(file: str) -> None:
    """ComfyUI knows SD1.5 by its exact channel widths: for a narrowed benchmark model (--width 0.5)
    its SD15 class is given the file's width; everything else (heads, blocks, sampling) stays ComfyUI's."""
    import comfy.supported_models as models

    models.SD15.unet_config = {**models.SD15.unet_config, "model_channels": unet_width(file)}


ENGINES = {
    "latentdiff": load_latentdiff,
    "diffusers": load_diffusers,
    "openvino": load_openvino,
    "sdcpp": load_sdcpp,
    "comfyui": load_comfy,
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("engine", choices=ENGINES)
    ap.add_argument("out")
    ap.add_argument("--folder", required=True, help="the diffusers folder")
    ap.add_argument("--file", required=True, help="the single file latentdiff convert wrote")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--variant", default="", help="int8 (openvino), q8_0 (sdcpp); empty: fp32")
    ap.add_argument("--comfy-dir", default="")
    ap.add_argument("--ov-cache", default="")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    call, engine_version = ENGINES[a.engine](a)
    t1 = time.perf_counter()
    call(1)
    t2 = time.perf_counter()
    with PeakRSS() as peak:
        image = call(a.steps)
    t3 = time.perf_counter()
    image.save(a.out)
    result = {
        "load_s": t1 - t0,
        "warmup_s": t2 - t1,
        "call_s": t3 - t2,
        "call_peak_rss_mib": peak.peak,
        "version": engine_version,
    }
    Path(a.out + ".json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
