"""The diffusers side of benchmarks/cold_start.py: what a diffusers user runs to get one image.

    python benchmarks/support/diffusers_generate.py MODEL_DIR OUT.png --steps 1 --size 64 --dtype fp32

Deliberately plain: import the pipeline, load the folder, generate, save. No latentdiff import.
"""

import argparse

import torch
from diffusers import StableDiffusionPipeline

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("out")
parser.add_argument("--prompt", default="a red apple")
parser.add_argument("--steps", type=int, default=1)
parser.add_argument("--size", type=int, required=True)
parser.add_argument("--guidance", type=float, default=7.5)
parser.add_argument("--dtype", default="fp32", choices=DTYPES)
parser.add_argument("--device", default="cpu")
args = parser.parse_args()

pipe = StableDiffusionPipeline.from_pretrained(
    args.model, torch_dtype=DTYPES[args.dtype], safety_checker=None, requires_safety_checker=False
).to(args.device)
pipe.set_progress_bar_config(disable=True)
image = pipe(
    args.prompt,
    num_inference_steps=args.steps,
    guidance_scale=args.guidance,
    height=args.size,
    width=args.size,
    generator=[torch.Generator("cpu").manual_seed(0)],
).images[0]
image.save(args.out)
print(args.out)
