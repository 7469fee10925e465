"""Command line: parse flags, build the command's config, call the API, map errors to exit codes.

Nothing heavy is imported at module level: `latentdiff --help` must answer instantly.
"""

from __future__ import annotations

import argparse
import os
import sys

from latentdiff.cli.image import add_image_flags, add_upscale
from latentdiff.errors import LatentDiffError
from latentdiff.sampling.schedulers import NAMES, SCHEDULERS

PROG = "latentdiff"
MIN_STEPS = ", ".join(f"{k} at least {m.min_steps}" for k, m in SCHEDULERS.items() if m.min_steps > 1)


def one_line(text: str) -> str:
    """`text` with control characters (a newline in a quoted argument or path) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def _add_generate(sub):
    p = sub.add_parser("generate", help="make images from a text prompt",
                       description="Make images from text. Prints each written PNG path on stdout.")
    p.add_argument("prompt", nargs="?", help="the text prompt (or use --prompts / --from)")
    p.add_argument("--model", help="model directory, single-file checkpoint (.safetensors), hub id (org/name), or omit for the shipped default")
    p.add_argument("--out", default="outputs", help="output folder (default: outputs/); files are never overwritten")
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's recommendation, else 25; "
                   f"with --scheduler {MIN_STEPS})")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale; 1 disables CFG (default: model's, else 7.5)")
    p.add_argument("--negative", help="negative prompt (default: empty)")
    p.add_argument("--seed", type=int, help="seed of the first image; image k uses seed+k (default: 0)")
    p.add_argument("--random-seed", action="store_true", help="draw a random seed (it is recorded in the PNG)")
    p.add_argument("--width", type=int, help="image width in pixels (default: the model's native size)")
    p.add_argument("--height", type=int, help="image height in pixels (default: the model's native size)")
    p.add_argument("--num-images", type=int, help="images per prompt (default: 1)")
    p.add_argument("--scheduler", help=f"{NAMES}, or an A1111 sampler name (default: the model's)")
    p.add_argument("--prompt-syntax", choices=("a1111", "plain"),
                   help="a1111: (word:1.3) / (word) / [word] emphasis, \\( escapes, BREAK (default); plain: the text as written")
    p.add_argument("--clip-skip", type=int, metavar="N", help="use the N-th text-encoder layer from the end, A1111 numbering: 1 = last (default: the model's, else 1)")
    p.add_argument("--lora", action="append", metavar="PATH[:SCALE]",
                   help="merge a LoRA (kohya/A1111, LyCORIS LoCon, diffusers, or a latentdiff LoRA run) at SCALE (default 1); repeat to stack")
    p.add_argument("--embedding", action="append", metavar="FILE[:TOKEN]",
                   help="a textual-inversion embedding (A1111 .pt/.safetensors, diffusers learned_embeds); write TOKEN (default: the file name) in the prompt; repeatable")
    p.add_argument("--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps (default: auto)")
    p.add_argument("--dtype", help="auto, fp32, fp16, bf16 (default: auto: fp16 on GPU; bf16 on CPUs with native bf16 for large models, else fp32)")
    p.add_argument("--prompts", metavar="FILE", help="text file with one prompt per line")
    p.add_argument("--from", dest="from_image", metavar="IMAGE.png", help="regenerate a latentdiff PNG from its recorded parameters (other flags override)")
    p.add_argument("--allow-pickle", action="store_true", default=None, help="allow pickle (.bin/.ckpt) weights; still loaded with weights_only=True")
    p.add_argument("--quiet", action="store_true", default=None,
                   help="no progress bar, no loading line (notes and errors still show)")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the UNet and VAE decoder: faster steps after a slow first call (minutes; cached on disk "
                        "for later processes); on CUDA with CUDA graphs")
    p.add_argument("--compile-mode", metavar="MODE",
                   help="implies --compile: auto (the default), default, reduce-overhead, max-autotune, "
                        "max-autotune-no-cudagraphs, fp8 (CUDA, needs torchao)")
    add_image_flags(p)
    p.add_argument("--vae", metavar="DIR|FILE", help="decode with this VAE instead of the model's own (folder or .safetensors)")
    p.add_argument("--refiner", metavar="M", help="SDXL refiner model that finishes the denoising (SDXL base + refiner)")
    p.add_argument("--refiner-start", type=float, metavar="F", help="fraction of the steps after which the refiner takes over (default: 0.8)")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args) -> int:
    # Before torch loads OpenMP: idle threads sleep instead of spinning. On a machine shared with
    # other jobs, spinning threads starved the working ones (steps up to 7x slower).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from latentdiff.cli.image import image_options
    from latentdiff.runtime.signals import import_torch, interrupts_deferred

    with interrupts_deferred():
        import_torch()
    from latentdiff.config.generate import GenerateConfig, read_prompts_file
    from latentdiff.errors import UsageError
    from latentdiff.cli.generate import run_generate
    from latentdiff.images.write import read_params

    prompts = []
    if args.prompt is not None:
        if not args.prompt.strip():
            raise UsageError("the prompt is empty; give some text, or --prompts FILE")
        prompts.append(args.prompt)
    if args.prompts:
        prompts += read_prompts_file(args.prompts)
    seed = None if args.random_seed else args.seed
    flags = dict(model=args.model, out=args.out, steps=args.steps, guidance=args.guidance, negative=args.negative,
                 seed=seed, width=args.width, height=args.height, num_images=args.num_images,
                 scheduler=args.scheduler, device=args.device, dtype=args.dtype,
                 allow_pickle=args.allow_pickle, quiet=args.quiet, compile=args.compile_mode or args.compile, refiner=args.refiner,
                 refiner_start=args.refiner_start, vae=args.vae, prompt_syntax=args.prompt_syntax,
                 clip_skip=args.clip_skip, loras=args.lora, embeddings=args.embedding)
    recorded_device = None
    if args.from_image:
        params = read_params(args.from_image)
        for note in params.pop("notes", []):  # an A1111 image: what does not carry over
            print(f"{PROG}: note: {note}", file=sys.stderr)
        recorded_device = None if args.dtype else params.get("device")
        cfg = GenerateConfig.from_image(params, args.from_image, **{**flags, "prompts": prompts or None,
                                                                    "image_options": image_options(args, params)})
        if args.random_seed:
            cfg.seed = None
    else:
        cfg = GenerateConfig(prompts=prompts, image_options=image_options(args),
                             **{k: v for k, v in flags.items() if v is not None})
        if args.random_seed:
            cfg.seed = None
    run_generate(cfg, recorded_device)
    return 0


def _add_convert(sub):
    p = sub.add_parser("convert", help="diffusers folder <-> single-file checkpoint (A1111 layout)",
                       description="Convert a diffusers model folder to one .safetensors file in the original "
                                   "(AUTOMATIC1111 / civitai) layout, or such a file to a diffusers folder.")
    p.add_argument("src", help="a model folder, or a single-file checkpoint")
    p.add_argument("dst", help="the file (.safetensors) or folder to write; never overwritten")
    p.add_argument("--dtype", help="store weights as fp32, fp16 or bf16 (default: as they are)")
    p.add_argument("--allow-pickle", action="store_true", help="allow reading a pickle (.ckpt) source, with weights_only=True")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args) -> int:
    from latentdiff.formats.convert import convert

    print(convert(args.src, args.dst, allow_pickle=args.allow_pickle, dtype=args.dtype), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Text-to-image latent diffusion: generate images, fine-tune models.")
    parser.add_argument("--version", action="version", version=f"{PROG} 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_generate(sub)
    add_upscale(sub)
    _add_convert(sub)
    for add in _extra_commands():
        add(sub)
    return parser


def _extra_commands():
    import latentdiff.cli.serve as cli_serve
    import latentdiff.cli.train as cli_train

    return cli_train.COMMANDS + cli_serve.COMMANDS


def main(argv=None) -> int:
    from latentdiff.runtime.signals import interrupts_deferred

    try:
        with interrupts_deferred():
            parser = build_parser()
            args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        code = _dispatch(args)
    except KeyboardInterrupt:  # also during start-up, before a command runs: exit 130, no traceback
        print(f"{PROG}: interrupted; files written so far are kept", file=sys.stderr)
        code = 130
        if argv is None:  # a second Ctrl-C during the interpreter's teardown would print a traceback
            sys.stderr.flush()
            os._exit(code)
        return code
    if argv is None and args.command in ("generate", "upscale"):
        # The real command line (not a test calling main([...])): every image is written and
        # closed, so skip the interpreter's teardown of torch/diffusers (2-3 s on a small CPU).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _dispatch(args) -> int:
    try:
        return args.func(args)
    except LatentDiffError as e:
        print(f"{PROG}: error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except MemoryError:
        print(f"{PROG}: error: out of memory; try fewer --num-images or a smaller size", file=sys.stderr)
        return 1
    except OSError as e:
        # Disk full, permission denied, a path that is a file: the user can act on these.
        print(one_line(f"{PROG}: error: {e.strerror or e}{': ' + str(e.filename) if e.filename else ''}"), file=sys.stderr)
        return 1


