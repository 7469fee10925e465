"""`latentdiff serve`. Options are checked before anything heavy is imported."""

from __future__ import annotations


def add_parser(sub) -> None:
    from latentdiff.config.params import THREADS_HELP  # standard library only: --help stays light

    p = sub.add_parser(
        "serve",
        help="run the HTTP server: JSON API, AUTOMATIC1111 API subset, web page",
        description="Keep models loaded and serve generations over HTTP: our /v1 JSON API "
        "(OpenAPI at /docs), the AUTOMATIC1111 /sdapi/v1 subset, and a web page at /.",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1; any other needs --token or --insecure-no-auth)",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860, as AUTOMATIC1111)")
    p.add_argument("--model", help="the default model: directory, hub id, or omit for the shipped one")
    p.add_argument("--models-dir", metavar="DIR", help="folder of models (and LoRA folders) requests may name")
    p.add_argument(
        "--controlnet-dir",
        metavar="DIR",
        help="folder of ControlNet / T2I-Adapter models requests may name (default: a controlnet/ folder "
        "in --models-dir or beside --model, if there is one)",
    )
    p.add_argument(
        "--ip-adapter-dir",
        metavar="DIR",
        help="folder of IP-Adapter files image prompts may name, with the image_encoder/ folder of the "
        "h94/IP-Adapter layout (default: an ipadapter/ folder in --models-dir or beside --model, if there is one)",
    )
    for name, what in (
        ("lora", "LoRA files a prompt's <lora:NAME:W> tags name (default: a lora/ or Lora/ folder"),
        ("embedding", "embeddings a prompt writes by file name, added to each model (default: an embeddings/ folder"),
        ("vae", "VAE files or folders the A1111 sd_vae setting names (default: a vae/ or VAE/ folder"),
    ):
        p.add_argument(
            f"--{name}-dir", metavar="DIR", help=f"{what} in --models-dir or beside --model, if there is one)"
        )
    p.add_argument(
        "--a1111-pixels",
        metavar="on|off",
        default="on",
        help="on: /sdapi/v1/txt2img runs A1111's own sampling path and GPU noise (NV) where it can, so A1111 "
        "clients get A1111's pixels; off: diffusers' path unless a request names A1111's seed fields (default: on)",
    )
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (or HTTP Basic with it as password)")
    p.add_argument("--insecure-no-auth", action="store_true", help="allow a non-loopback --host without --token")
    p.add_argument("--compile", action="store_true", help="torch.compile each model once, when it is loaded")
    p.add_argument(
        "--speed",
        default="off",
        help="CPU levers for every model: auto (those that measured faster here, for a server's many calls), "
        "or channels-last, compile, int8 joined by commas (default: off)",
    )
    p.add_argument(
        "--pin-weights",
        action="store_true",
        help="copy memory-mapped weights into the server's own memory, so memory pressure cannot evict them "
        "and make requests read them from disk again",
    )
    p.add_argument("--queue-size", type=int, default=16, help="jobs that may wait; more get 429 (default: 16)")
    p.add_argument("--out", default="outputs", help="folder for the written PNGs (default: outputs/)")
    p.add_argument("--cors", metavar="ORIGIN", help="allow browser pages from ORIGIN (default: no CORS)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default: auto)")
    p.add_argument("--dtype", default="auto", help="auto, fp32, fp16, bf16 (default: auto)")
    p.add_argument("--num-threads", type=int, metavar="N", help=THREADS_HELP)
    p.add_argument(
        "--memory-budget",
        type=float,
        metavar="GB",
        dest="memory_budget_gb",
        help="weights of loaded models kept at most (LRU; default: half the RAM)",
    )
    p.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body (default: 16)")
    p.add_argument(
        "--components",
        metavar="DIR",
        help="for a transformer file as --model: the diffusers folder of its family, or ComfyUI's models "
        "folder, its text encoders, tokenizers and VAE come from (as generate's)",
    )
    p.add_argument(
        "--text-encoder",
        dest="text_encoders",
        action="append",
        default=[],
        metavar="FILE",
        help="a text encoder file used in place of --model's encoder it fits (repeatable; as generate's)",
    )
    p.add_argument(
        "--vae",
        metavar="FILE|DIR",
        help="a VAE (safetensors file, VAE folder or model folder) used in place of --model's own (as generate's; "
        "requests' sd_vae setting still picks one of --vae-dir per request)",
    )
    p.add_argument(
        "--offload",
        default="none",
        help="none, model (one component on the GPU at a time) or sequential (one layer) (default: none)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see cli/generate.py
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.server.config import ServeConfig

    cfg = ServeConfig(**{k: v for k, v in vars(args).items() if k not in ("func", "command")})
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.server.run import serve

    return serve(cfg)
