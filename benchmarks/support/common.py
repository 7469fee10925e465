"""Shared helpers for the benchmark scripts: models, timing, memory, result tables.

Timing rules (the machine may be shared, so absolute times drift with other jobs):
every contender is warmed up first, then the contenders run *interleaved* (A B A B ...,
with the order rotated each round), and we report medians and the ratio of medians.
The load average before and after is written next to every table.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable

BENCH_DIR = Path(__file__).resolve().parents[1]
RESULTS_DIR = BENCH_DIR / "results"
REPO_ROOT = BENCH_DIR.parent
# Big random models live outside the repository (3.4 GB for the SD1.5 UNet alone).
CACHE_DIR = Path(os.environ.get("LATENTDIFF_BENCH_CACHE", "/tmp/latentdiff-bench"))

# The real Stable Diffusion 1.5 configs (runwayml/stable-diffusion-v1-5), written out so that no
# download is needed; only the weights are random. The tokenizer is a small BPE trained on a few
# captions, so the text encoder's vocabulary (and embedding table) is smaller than CLIP's 49408 rows:
# that changes nothing in the compute of a forward pass.
SD15_ARCH = {
    "unet": {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "center_input_sample": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "act_fn": "silu",
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
    },
    "vae": {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "sample_size": 512,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "act_fn": "silu",
        "norm_num_groups": 32,
        "scaling_factor": 0.18215,
    },
    "text_encoder": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": 768,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
    },
    "tokenizer": {"num_merges": 2000, "max_length": 77},
    "scheduler": {
        "_class_name": "PNDMScheduler",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "clip_sample": False,
        "trained_betas": None,
        "prediction_type": "epsilon",
    },
}
PROMPT = "an astronaut riding a horse on the moon, detailed photo"


# ---- models -------------------------------------------------------------------------------
def _build_once(out: Path, build: Callable[[Path], None]) -> Path:
    """Build into a temporary folder and rename it into place, so a crash never leaves a
    half-written model that later runs would trust."""
    if (out / "model_index.json").is_file():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    tmp.rename(out)
    return out


def sd15_model(cache_dir: Path = CACHE_DIR, width: float = 1.0, clip_vocab: bool = False) -> Path:
    """An SD1.5-architecture model (860M-parameter UNet) with seeded random weights; `width` < 1
    narrows the UNet's channels (0.5: 215M parameters, a quarter of the compute; VAE and text
    encoder as SD1.5's). `clip_vocab`: CLIP's own tokenizer and 49408-row embedding (the one
    latentdiff ships), as tools with a built-in tokenizer (stable-diffusion.cpp, ComfyUI) expect."""
    arch = {**SD15_ARCH, "unet": {**SD15_ARCH["unet"]}}
    arch["unet"]["block_out_channels"] = [int(c * width) for c in SD15_ARCH["unet"]["block_out_channels"]]
    name = ("sd15" if width == 1.0 else f"sd15-w{width:g}") + ("-clip" if clip_vocab else "") + "-random"

    def build(tmp: Path):
        from latentdiff.models.build import build_components
        from latentdiff.models.components import save_components
        from latentdiff.models.testing import WORDS

        log(f"building the {name} model in {cache_dir} (once)")
        tokenizer = None
        if clip_vocab:
            from latentdiff.families.released import clip_tokenizer

            tokenizer = clip_tokenizer(open_clip=False)
        c = build_components(arch, WORDS + [PROMPT], seed=0, tokenizer=tokenizer)
        save_components(c, tmp, arch["scheduler"]["_class_name"])

    return _build_once(cache_dir / name, build)


def emoji_arch_model(cache_dir: Path = CACHE_DIR) -> Path:
    """The shipped model's architecture (configs/models/emoji-stage2.yaml + configs/vae/emoji.yaml)
    with seeded random weights: the same compute per image as the real model, before it exists."""

    def build(tmp: Path):
        import yaml

        from latentdiff.models.build import build_components
        from latentdiff.models.components import save_components
        from latentdiff.models.testing import WORDS

        arch = yaml.safe_load((REPO_ROOT / "configs" / "models" / "emoji-stage2.yaml").read_text())
        arch.pop("init_from", None)  # random weights: no trained stage one needed
        arch["vae"] = yaml.safe_load((REPO_ROOT / "configs" / "vae" / "emoji.yaml").read_text())["vae"]
        c = build_components(arch, WORDS + [PROMPT], seed=0)
        c.defaults = dict(arch.get("defaults") or {})
        save_components(c, tmp, arch["scheduler"]["_class_name"])

    return _build_once(cache_dir / "emoji-arch2-random", build)


def small_model(ref: str | None, cache_dir: Path = CACHE_DIR) -> tuple[Path, str]:
    """(model dir, label): `ref` ("emoji-arch" builds the shipped architecture with random
    weights), else the shipped default model, else the tiny test model."""
    if ref == "emoji-arch":
        return emoji_arch_model(cache_dir), "emoji-arch-random"
    if ref:
        return Path(ref), Path(ref).name
    from latentdiff.models.hub import default_model_dir

    shipped = default_model_dir()
    if (shipped / "model_index.json").is_file():
        return shipped, "shipped-" + shipped.name
    return tiny_model(cache_dir), "tiny-sd1"


def tiny_model(cache_dir: Path = CACHE_DIR) -> Path:
    """The tiny SD1 test model (latentdiff.models.testing), built once."""

    def build(tmp: Path):
        from latentdiff.models.testing import make_tiny_model

        make_tiny_model(tmp, "sd1")

    return _build_once(cache_dir / "tiny-sd1", build)


def native_size(model: Path) -> int:
    """The image size a diffusers-format model was made for (UNet sample size x VAE factor)."""
    unet = json.loads((model / "unet" / "config.json").read_text())
    vae = json.loads((model / "vae" / "config.json").read_text())
    return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)


def diffusers_pipeline(model_dir: Path, dtype, device="cpu"):
    """diffusers' StableDiffusionPipeline on the same folder, as its users load it."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(model_dir), torch_dtype=dtype, safety_checker=None, requires_safety_checker=False
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_call(pipe, prompt: str, steps: int, guidance: float, size: int, seeds: list[int]):
    """One diffusers generation with the same per-image generators as latentdiff's seeds."""
    import torch

    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    return pipe(
        [prompt] * len(seeds),
        num_inference_steps=steps,
        guidance_scale=guidance,
        height=size,
        width=size,
        generator=gens,
    ).images


# ---- timing -------------------------------------------------------------------------------
def interleaved(
    contenders: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    on_round: Callable[[int, dict], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call for each contender: warm-ups first, then rounds in rotating order."""
    names = list(contenders)
    for _ in range(warmup):
        for n in names:
            contenders[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            contenders[n]()
            times[n].append(time.perf_counter() - t0)
        if on_round:
            on_round(r, times)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 5 ms),
    and how far it rose above the level at entry."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self.start = interval, 0, 0
        self._stop = threading.Event()

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self.start = self.peak = self._proc.memory_info().rss
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20

    @property
    def rise_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def current_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def process_peak_rss_mb() -> float:
    """ru_maxrss of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(cmd: list[str], env: dict | None = None, cwd=None) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS MiB of that child, exit code, stderr tail) of a fresh process."""
    import subprocess

    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
    # wait4 gives the rusage of exactly this child (RUSAGE_CHILDREN would be a max over all of them).
    out_err = []

    def drain(stream):
        out_err.append(stream.read())

    readers = [threading.Thread(target=drain, args=(s,)) for s in (p.stdout, p.stderr)]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    for t in readers:
        t.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    tail = b"".join(out_err).decode(errors="replace")[-2000:]
    return wall, usage.ru_maxrss / 1024, p.returncode, tail


# ---- reporting ------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    from latentdiff.runtime.device import cpu_bf16

    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "native_bf16": cpu_bf16().native,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load_avg_start": load_average(),
    }
    for lib in ("diffusers", "transformers"):
        from importlib.metadata import version

        info[lib] = version(lib)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(
    name: str, rows: list[dict], columns: list[str], meta: dict, command: str | None = None, notes: str = ""
) -> Path:
    """benchmarks/results/NAME.json (everything) and NAME.md (the table); prints the table."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    meta = {
        **meta,
        # A table rewritten from a finished run's JSON keeps that run's end and command.
        "load_avg_end": meta.get("load_avg_end") or load_average(),
        "command": command or meta.get("command") or " ".join([Path(sys.executable).name, *sys.argv]),
    }
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    header = (
        f"# {name}\n\n`{meta['command']}`\n\n{meta.get('cpu')} ({meta.get('cores')} cores, "
        f"{meta.get('torch_threads')} torch threads), torch {meta.get('torch')}, diffusers "
        f"{meta.get('diffusers')}, {meta.get('date')}; load average (1/5/15 min) at start "
        f"{meta.get('load_avg_start')}, at end {meta['load_avg_end']}.\n\n"
    )
    table = markdown_table(rows, columns)
    (RESULTS_DIR / f"{name}.md").write_text(header + table + "\n" + (f"\n{notes}\n" if notes else ""))
    print(table, flush=True)
    return RESULTS_DIR / f"{name}.md"


class StepClock:
    """Timestamps at the end of each denoising step, for either pipeline (after a CUDA sync on
    a GPU); `mark_first` also stamps our loop's start, before its first step."""

    def __init__(self, device=None, mark_first: bool = False):
        self.device, self.mark_first = device, mark_first
        self.marks: list[float] = []
        self.step_times: list[float] = []

    def start(self):
        self.marks = []

    def mark(self, *_):
        if self.device is not None and self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
        self.marks.append(time.perf_counter())

    def finish(self):
        self.step_times += [b - a for a, b in zip(self.marks, self.marks[1:])]

    # latentdiff: Pipeline.progress_bar(batch) returns a wrapper around the timestep iterator
    def ours_progress(self, _batch):
        def wrap(it):
            if self.mark_first:
                self.mark()
            for t in it:
                yield t
                self.mark()

        return wrap

    # diffusers: callback_on_step_end(pipe, i, t, kwargs) -> kwargs
    def theirs_callback(self, pipe, i, t, kwargs):
        self.mark()
        return kwargs
