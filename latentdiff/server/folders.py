"""The server's folders of add-ons, as A1111 keeps them beside its models: LoRA files that prompts'
`<lora:NAME:W>` tags name, embeddings a prompt writes by file name (added to each model before a job), VAEs
the `sd_vae` setting names, and the prompt styles of a styles.csv. Every listing reads its folder
when asked, so A1111's refresh routes have nothing left to do."""

from __future__ import annotations

import csv
from pathlib import Path

from latentdiff.errors import UsageError

LORA_EXTENSIONS = (".safetensors", ".pt", ".ckpt")  # formats/lora_tags.EXTENSIONS (which imports torch)
EMBEDDING_EXTENSIONS = (".pt", ".safetensors", ".bin")  # formats/embeddings.embedding_files
VAE_EXTENSIONS = (".safetensors", ".pt", ".ckpt")
OWN_VAE = ("Automatic", "None", None)  # A1111's sd_vae values meaning the model's own VAE
MAX_STYLES_BYTES = 1 << 20


def files(folder: Path | None, extensions: tuple[str, ...]) -> list[Path]:
    """The files of `folder` and below with one of `extensions`, sorted (none without a folder)."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions)


def loras(cfg) -> list[dict]:
    """GET /sdapi/v1/loras: A1111's {name, alias, path, metadata} per LoRA file."""
    return [
        {"name": p.stem, "alias": p.stem, "path": str(p), "metadata": {}}
        for p in files(cfg.lora_folder(), LORA_EXTENSIONS)
    ]


def embeddings(cfg) -> dict:
    """GET /sdapi/v1/embeddings: every file of the folder, written in a prompt by its file name."""
    found = files(cfg.embedding_folder(), EMBEDDING_EXTENSIONS)
    item = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None, "vectors": None}
    return {"loaded": {p.stem: dict(item) for p in found}, "skipped": {}}


def add_new_embeddings(pipe, cfg) -> None:
    """The folder's embeddings that `pipe` does not hold yet, added to it (by the worker, before a
    job: a model loaded earlier takes files put in the folder since, as A1111's refresh does)."""
    have = {e.get("path") for e in pipe.addons.embeddings}
    new = [p for p in files(cfg.embedding_folder(), EMBEDDING_EXTENSIONS) if str(p.resolve()) not in have]
    if not new:
        return
    # Imported with the first embedding: formats/embeddings imports torch (loaded with the first model).
    from latentdiff.formats import embeddings as ti

    records, multi = ti.add_embeddings(pipe.components, [ti.parse_spec(str(p)) for p in new])
    pipe.addons.embeddings.extend(records)
    pipe.addons.multi_vector.update(multi)


def vaes(cfg) -> list[dict]:
    """GET /sdapi/v1/sd-vae: A1111's {model_name, filename}: VAE files, and diffusers VAE folders
    (a config.json) in the folder."""
    folder = cfg.vae_folder()
    found = files(folder, VAE_EXTENSIONS)
    if folder is not None:
        found += sorted(d for d in folder.iterdir() if d.is_dir() and (d / "config.json").is_file())
    return [{"model_name": p.name, "filename": str(p)} for p in found]


def vae_path(cfg, name) -> str | None:
    """The VAE the sd_vae setting `name` names (its file name, or without the extension); None for
    the model's own (Automatic, None); 400 naming it when the folder has no such VAE."""
    if name in OWN_VAE:
        return None
    listed = vaes(cfg)
    for v in listed:
        if name in (v["model_name"], Path(v["model_name"]).stem):
            return v["filename"]
    shown = ", ".join(v["model_name"] for v in listed) or "none (no --vae-dir, no vae/ folder in --models-dir)"
    raise UsageError(f"sd_vae={str(name)[:100]!r} is not a VAE of this server; GET /sdapi/v1/sd-vae lists: {shown}")


def check_lora_tags(cfg, prompts) -> None:
    """The `<lora:NAME:W>` tags of every prompt found in the LoRA folder (400 naming the tag), before
    the job is queued; the pipeline merges them for the call (as `generate --lora-dir`)."""
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not any("<" in t for t in texts):
        return
    # Imported with a prompt that has a tag: lora_tags imports torch (the server loads it with its first model).
    from latentdiff.formats.lora_tags import lora_specs, strip_tags

    for text in texts:
        tags = strip_tags(text)[1]
        if tags:
            lora_specs(tags, cfg.lora_folder())


def styles(cfg) -> list[dict]:
    """GET /sdapi/v1/prompt-styles: the rows of styles.csv (A1111's columns name, prompt,
    negative_prompt), read at each request."""
    path = cfg.styles_file()
    if path is None:
        return []
    if path.stat().st_size > MAX_STYLES_BYTES:
        raise UsageError(f"{path.name} is over {MAX_STYLES_BYTES:,} bytes; not read")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"{path.name} is not a CSV file of A1111 styles: {str(e)[:100]}") from None
    return [
        {"name": r["name"], "prompt": r.get("prompt") or "", "negative_prompt": r.get("negative_prompt") or ""}
        for r in rows
        if r.get("name")
    ]


def merge_style(style_text: str, text: str) -> str:
    """A1111's rule: a style with `{prompt}` takes the prompt there; any other is appended after ", "."""
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", text)
    return ", ".join(t for t in (text.strip(), style_text.strip()) if t)


def apply_styles(cfg, names, prompt: str, negative: str) -> tuple[str, str]:
    """(prompt, negative prompt) with the named styles applied in order, as A1111; 400 for a name
    styles.csv lacks."""
    if not names:
        return prompt, negative
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UsageError(f"styles must be a list of style names, got {str(names)[:60]!r}")
    table = {s["name"]: s for s in styles(cfg)}
    for name in names:
        s = table.get(name)
        if s is None:
            shown = ", ".join(table) or "none (no styles.csv in --models-dir)"
            raise UsageError(f"styles: unknown style {name[:100]!r}; GET /sdapi/v1/prompt-styles lists: {shown}")
        prompt, negative = merge_style(s["prompt"], prompt), merge_style(s["negative_prompt"], negative)
    return prompt, negative
