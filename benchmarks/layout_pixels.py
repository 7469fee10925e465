"""Same pixels before and after a restructuring: run one matrix of generate/upscale commands with the
code of a reference commit and with the working tree, on the same machine in one run, and compare the
images bit for bit.

    python benchmarks/layout_pixels.py [--before REV] [--only sd1-euler ...]

The reference commit is checked out once into a git worktree under $LATENTDIFF_BENCH_CACHE
(default /tmp/latentdiff-bench); its tiny models (SD1, SD2 v-prediction, SD1 inpainting, SDXL base and
refiner, the x4 upscaler) are built there by that commit's own builders and then loaded from disk by
both sides, so only the inference code differs. Its outputs are kept (recorded once per commit and
machine); the working tree's are made afresh. Each side runs every case in one process through
`latentdiff.cli.main(argv)`, the entry point that must survive any move. Prints a Markdown table:
case, identical (all pixels equal), max abs difference, and exits 1 if any case differs or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("LATENTDIFF_BENCH_CACHE", "/tmp/latentdiff-bench")) / "layout-pixels"
# The commit before issue 23 moved the package into folders (tagged layout-before where the tag exists).
BEFORE = "48e798f97201ce97248ffda58b662af4e03df0aa"
SD = ["--steps", "4", "--width", "64", "--height", "64", "--seed", "3", "--quiet"]
SCHEDULERS = [
    "ddim",
    "ddpm",
    "euler",
    "euler_a",
    "heun",
    "lms",
    "dpm++2m",
    "dpm++2m_karras",
    "unipc",
    "DPM++ 2M Karras",
    "Euler a",
]


def cases(m: Path, inputs: Path) -> dict[str, list[str]]:
    """name -> argv (without --out). `m`: the models folder, `inputs`: pictures and masks."""
    sd1, img, mask = str(m / "sd1"), str(inputs / "photo.png"), str(inputs / "mask.png")
    out = {
        f"sd1-{s.replace(' ', '_')}": ["generate", "a red apple", "--model", sd1, "--scheduler", s, *SD]
        for s in SCHEDULERS
    }
    out |= {
        "sd1-pndm": ["generate", "a red apple", "--model", sd1, "--scheduler", "pndm", *SD, "--steps", "30"],
        "sd1-syntax": [
            "generate",
            "a (red:1.3) apple BREAK [green] pear",
            "--model",
            sd1,
            "--negative",
            "cat",
            "--clip-skip",
            "2",
            "--num-images",
            "2",
            "--guidance",
            "5",
            *SD,
        ],
        "sd1-guidance1": ["generate", "photo of a cat", "--model", sd1, "--guidance", "1", *SD],
        "sd1-bf16": ["generate", "photo of a cat", "--model", sd1, "--dtype", "bf16", *SD],
        "sd1-96x64": ["generate", "photo of a cat", "--model", sd1, *SD, "--width", "96"],
        "sd2-vpred": ["generate", "blue sky with clouds", "--model", str(m / "sd2"), *SD],
        "sd2-ddim": ["generate", "blue sky with clouds", "--model", str(m / "sd2"), "--scheduler", "ddim", *SD],
        "img2img": ["generate", "a green pear", "--model", sd1, "--init-image", img, "--strength", "0.6", *SD],
        "img2img-fit": [
            "generate",
            "a green pear",
            "--model",
            sd1,
            "--init-image",
            img,
            "--resize",
            "fit",
            "--scheduler",
            "euler_a",
            *SD,
        ],
        "inpaint-unet": ["generate", "a cat", "--model", str(m / "inpaint"), "--init-image", img, "--mask", mask, *SD],
        "inpaint-sd1": [
            "generate",
            "a cat",
            "--model",
            sd1,
            "--init-image",
            img,
            "--mask",
            mask,
            "--strength",
            "0.8",
            *SD,
        ],
        "inpaint-masked": [
            "generate",
            "a cat",
            "--model",
            str(m / "inpaint"),
            "--init-image",
            img,
            "--mask",
            mask,
            "--inpaint-area",
            "masked",
            "--padding",
            "8",
            *SD,
        ],
        "outpaint": [
            "generate",
            "a cat",
            "--model",
            str(m / "inpaint"),
            "--init-image",
            img,
            "--outpaint",
            "16,0,8,0",
            *SD,
        ],
        "hires-latent": ["generate", "a red apple", "--model", sd1, "--hires", "1.5", "--hires-steps", "3", *SD],
        "hires-lanczos": [
            "generate",
            "a red apple",
            "--model",
            sd1,
            "--hires",
            "1.5",
            "--hires-upscaler",
            "lanczos",
            *SD,
        ],
        "sdxl": ["generate", "a red apple", "--model", str(m / "sdxl"), *SD],
        "sdxl-refiner": [
            "generate",
            "a red apple",
            "--model",
            str(m / "sdxl"),
            "--refiner",
            str(m / "refiner"),
            "--refiner-start",
            "0.5",
            *SD,
        ],
        "sdxl-img2img": ["generate", "a red apple", "--model", str(m / "sdxl"), "--init-image", img, *SD],
        "upscale": ["upscale", img, "--model", str(m / "x4"), "--prompt", "a cat", "--steps", "3", "--quiet"],
        "upscale-tiled": ["upscale", img, "--model", str(m / "x4"), "--steps", "2", "--tile", "128", "--quiet"],
        "cascade": ["generate", "a red apple", "--model", sd1, "--upscaler", str(m / "x4"), *SD],
        "shipped": ["generate", "grinning face", "--seed", "1", "--quiet", "--no-upscale"],
        "shipped-euler_a-2": [
            "generate",
            "red apple",
            "--scheduler",
            "euler_a",
            "--steps",
            "6",
            "--num-images",
            "2",
            "--quiet",
            "--no-upscale",
        ],
    }
    return out


def build_models(m: Path, inputs: Path) -> None:
    """The tiny models and input pictures, by the reference commit's own builders (run in its tree)."""
    import numpy as np
    from PIL import Image

    from latentdiff.models.testing import make_tiny_model, make_tiny_sdxl, make_tiny_upscaler

    make_tiny_model(m / "sd1", "sd1")
    make_tiny_model(m / "sd2", "sd2")
    make_tiny_model(m / "inpaint", "sd1-inpaint", seed=1)
    make_tiny_sdxl(m / "sdxl")
    make_tiny_sdxl(m / "refiner", refiner=True)
    make_tiny_upscaler(m / "x4")
    inputs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (80, 72, 3), dtype=np.uint8)).save(inputs / "photo.png")
    mask = np.zeros((80, 72), np.uint8)
    mask[20:50, 16:48] = 255
    Image.fromarray(mask).save(inputs / "mask.png")


def run_side(out: Path, m: Path, inputs: Path, only: list[str]) -> None:
    """Child process: every case through the CLI's main, images in out/<case>/, failures in out/errors.json."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    if not (m / "sd1").exists():
        build_models(m, inputs)
    from latentdiff.cli.main import main

    errors = {}
    for name, argv in cases(m, inputs).items():
        if only and name not in only:
            continue
        code = main([*argv, "--out", str(out / name)])
        if code:
            errors[name] = code
    (out / "errors.json").write_text(json.dumps(errors))


def side(tree: Path, out: Path, only: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, __file__, "_side", str(out), "--only", *only], cwd=tree, env=env, check=True)


def pixels(folder: Path) -> list:
    import numpy as np
    from PIL import Image

    return [np.asarray(Image.open(p)).astype(np.int16) for p in sorted(folder.glob("*.png"))]


def compare(before: Path, after: Path, names: list[str]) -> bool:
    errs = {**json.loads((before / "errors.json").read_text()), **json.loads((after / "errors.json").read_text())}
    print("| case | images | identical | max abs diff |\n|---|---|---|---|")
    ok = True
    for name in names:
        a, b = pixels(before / name), pixels(after / name)
        same = bool(a) and len(a) == len(b) and all(x.shape == y.shape and (x == y).all() for x, y in zip(a, b))
        diff = max((int(abs(x - y).max()) for x, y in zip(a, b) if x.shape == y.shape), default=-1)
        note = f" (exit {errs[name]})" if name in errs else ""
        print(f"| {name}{note} | {len(a)}/{len(b)} | {'yes' if same else 'NO'} | {diff} |")
        ok &= same
    return ok


def main() -> None:
    if sys.argv[1:2] == ["_side"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("_side")
        ap.add_argument("out", type=Path)
        ap.add_argument("--only", nargs="*", default=[])
        a = ap.parse_args()
        return run_side(a.out, CACHE / "models", CACHE / "inputs", a.only)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default=BEFORE, help="reference commit (default: the one before issue 23's move)")
    ap.add_argument("--only", nargs="*", default=[], help="case names (default: all)")
    args = ap.parse_args()
    sha = subprocess.check_output(["git", "rev-parse", args.before + "^{commit}"], cwd=ROOT, text=True).strip()
    tree = CACHE / f"tree-{sha[:10]}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT, check=True)
    machine = platform.processor() or platform.machine()
    before = CACHE / f"out-{sha[:10]}-{machine}"
    if not (before / "errors.json").exists():
        side(tree, before, args.only)
    after = CACHE / f"out-worktree-{os.getpid()}"  # one per run: several runs may share the cache
    try:
        side(ROOT, after, args.only)
        names = [n for n in cases(CACHE / "models", CACHE / "inputs") if not args.only or n in args.only]
        print(
            f"\nbefore: {args.before} ({sha[:10]}), after: working tree; machine: {machine}, {os.cpu_count()} cores\n"
        )
        same = compare(before, after, names)
    finally:
        subprocess.run(["rm", "-rf", str(after)], check=True)
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
