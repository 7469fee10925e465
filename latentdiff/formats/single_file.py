"""Single-file checkpoints in the original (LDM / AUTOMATIC1111 / civitai) key layout.

Reading goes through diffusers' own converters (`convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`, `convert_open_clip_checkpoint`),
with configs from the file's own metadata (files written by `latentdiff convert` carry their
configs and tokenizers) or, for foreign files, the shipped configs of the detected family.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from latentdiff.errors import ModelError
from latentdiff.families.registry import family_of as model_family
from latentdiff.families.registry import family_with_variant
from latentdiff.families.released import clip_tokenizer
from latentdiff.formats.detect import detect, read_header
from latentdiff.formats.ldm_keys import CLIP_PREFIXES, clip_to_ldm, open_clip_to_ldm, unet_to_ldm, vae_to_ldm
from latentdiff.models.assemble import build_module
from latentdiff.models.checks import check_defaults, check_diffusers_config, check_scheduler_config, guarded
from latentdiff.models.components import Components
from latentdiff.models.configs import clip_config
from latentdiff.models.files import is_present
from latentdiff.models.weights import SAFETENSORS, UNKNOWN, load_state_dict, sniff_format
from latentdiff.runtime.files import as_umask_allows
from latentdiff.runtime.libraries import quiet_libraries
from latentdiff.runtime.reading import parse_json, read_yaml

META_KEY = "latentdiff"  # JSON: family, configs, tokenizer files, defaults
SLOTS = ("text_encoder", "text_encoder_2")


def family_of(c: Components) -> str:
    """The released architecture (sd1, sd2, sdxl, sdxl_refiner) a model's single file is written as."""
    return model_family(c).variant(c)


def _prefix(family: str, slot: str) -> str:
    prefixes = CLIP_PREFIXES[family]
    return prefixes[0] if slot == "text_encoder" else prefixes[-1]


# ---- reading -------------------------------------------------------------------------------
def load_single_file(path: Path, allow_pickle: bool = False) -> Components:
    """Components of a single-file checkpoint (safetensors; a pickle only with allow_pickle)."""
    own = None
    if sniff_format(path) == SAFETENSORS:
        shapes, meta = read_header(path)
        own = _own_metadata(meta, path)
        kind = None if own else detect(shapes, path)
        sd = load_state_dict(path)
    else:
        sd = load_state_dict(path, allow_pickle)
        kind = detect({k: list(v.shape) for k, v in sd.items() if hasattr(v, "shape")}, path)
    if own is None:
        own = family_with_variant(kind.family).released(kind.family, kind.in_channels, sidecar_prediction(path))
        own["family"] = kind.family
    try:
        return _components(sd, own, path)
    except (KeyError, IndexError, ValueError) as e:  # a converter met a tensor layout it does not know
        raise ModelError(f"{path} could not be converted as {own['family']}: {type(e).__name__} {e}") from None


def check_file(path: Path) -> None:
    """What `load_single_file` refuses without reading tensor data: a file that is no checkpoint, or
    a checkpoint of another kind (SD3, Flux, a LoRA, a VAE alone, ...), in the same one line."""
    kind = sniff_format(path)
    if kind == SAFETENSORS:
        shapes, meta = read_header(path)
        if _own_metadata(meta, path) is None:
            detect(shapes, path)
    elif kind == UNKNOWN:
        load_state_dict(path)  # refuses it from its first bytes


def _own_metadata(meta: dict, path: Path) -> dict | None:
    """The configs a file written by `convert` carries: user data like a folder's, checked alike."""
    if META_KEY not in meta:
        return None
    where = f"{path} (latentdiff metadata)"
    own = parse_json(meta[META_KEY], where, ModelError)
    if not (isinstance(own, dict) and isinstance(own.get("family"), str) and own["family"] in CLIP_PREFIXES):
        raise ModelError(f"{path} has damaged latentdiff metadata")
    for key in ("unet", "vae", "scheduler", "defaults", "index", "tokenizers", *SLOTS):
        if not isinstance(own.get(key) or {}, dict) or (key in ("unet", "vae", "scheduler") and not own.get(key)):
            raise ModelError(f"{where}: {key} must be a JSON object")
    check_diffusers_config(own["unet"], "unet", f"{where} unet")
    check_diffusers_config(own["vae"], "vae", f"{where} vae")
    check_scheduler_config(own["scheduler"], f"{where} scheduler")
    check_defaults(own.get("defaults") or {}, f"{where} defaults")
    for slot in SLOTS:
        if own.get(slot):
            clip_config(own[slot], f"{where} {slot}")
        files = (own.get("tokenizers") or {}).get(slot) or {}
        if not isinstance(files, dict) or not all(_plain_text_file(k, v) for k, v in files.items()):
            raise ModelError(f"{where}: the {slot} tokenizer's files must be a table of file names to text")
    return own


def _plain_text_file(name, text) -> bool:
    if not (isinstance(name, str) and isinstance(text, str)) or Path(name).name in ("", ".", ".."):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON may spell
        return False
    return True


def sidecar_prediction(path: Path) -> str | None:
    """AUTOMATIC1111's convention: MODEL.yaml beside MODEL.safetensors says `parameterization: v`."""
    yaml_path = path.with_suffix(".yaml")
    if not is_present(yaml_path, "model config"):
        return None
    cfg = read_yaml(yaml_path, "model config", error=ModelError) or {}
    try:
        param = cfg.get("model", {}).get("params", {}).get("parameterization", "eps")
    except AttributeError:
        raise ModelError(f"{yaml_path} is not a readable model config") from None
    return "v_prediction" if param == "v" else "epsilon"


def _components(sd: dict, own: dict, where: Path) -> Components:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    quiet_libraries()
    unet = build_module(UNet2DConditionModel, own["unet"], convert_ldm_unet_checkpoint(sd, own["unet"]), where)
    vae = build_module(AutoencoderKL, own["vae"], convert_ldm_vae_checkpoint(sd, own["vae"]), where)
    parts = {}
    for slot in SLOTS:
        if own.get(slot):
            config = clip_config(own[slot], f"{where} ({slot})")
            parts[slot] = _text_encoder(sd, own["family"], slot, config, where)
            parts[slot.replace("text_encoder", "tokenizer")] = _tokenizer(own, own["family"], slot)
    return Components(
        unet=unet,
        vae=vae,
        text_encoder=parts.get("text_encoder"),
        tokenizer=parts.get("tokenizer"),
        text_encoder_2=parts.get("text_encoder_2"),
        tokenizer_2=parts.get("tokenizer_2"),
        scheduler_config=dict(own["scheduler"]),
        defaults=dict(own.get("defaults") or {}),
        index=dict(own.get("index") or {}),
    )


def _text_encoder(sd: dict, family: str, slot: str, config, where: Path):
    import transformers
    from accelerate import init_empty_weights
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint

    cls = transformers.CLIPTextModel if slot == "text_encoder" else transformers.CLIPTextModelWithProjection
    with init_empty_weights():
        shell = guarded(lambda: cls(config), f"{where} ({slot})")  # heads that do not divide the width
    prefix = _prefix(family, slot)
    if prefix.endswith(".transformer."):
        te_sd = convert_ldm_clip_checkpoint({k: v for k, v in sd.items() if k.startswith(prefix)})
    else:
        te_sd = convert_open_clip_checkpoint(shell, sd, prefix=prefix)
    if not hasattr(shell, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        te_sd = {k.removeprefix("text_model."): v for k, v in te_sd.items() if k != "text_projection.weight"}
    return build_module(cls, config, te_sd, f"{where} ({slot})")


def _tokenizer(own: dict, family: str, slot: str):
    files = (own.get("tokenizers") or {}).get(slot)
    if files:
        from transformers import CLIPTokenizer

        with tempfile.TemporaryDirectory() as d:
            for name, text in files.items():
                (Path(d) / Path(name).name).write_text(text, encoding="utf-8")
            return CLIPTokenizer.from_pretrained(d, local_files_only=True)
    return clip_tokenizer(open_clip=not _prefix(family, slot).endswith(".transformer."))


# ---- writing -------------------------------------------------------------------------------
def save_single_file(c: Components, out: Path, dtype=None) -> Path:
    """One safetensors file in the original layout, carrying our configs and tokenizers as metadata."""
    from safetensors.torch import save_file

    tensors, own = to_ldm(c)
    cast = (lambda t: t.to(dtype) if t.is_floating_point() else t) if dtype is not None else (lambda t: t)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: cast(v).contiguous() for k, v in tensors.items()},
        str(out),
        metadata={"format": "pt", META_KEY: json.dumps(own, sort_keys=True, default=list)},
    )
    as_umask_allows(out)
    return out


def to_ldm(c: Components, with_tokenizers: bool = True) -> tuple[dict, dict]:
    """(tensors in the original layout, our metadata) for the components `c`."""
    family = family_of(c)
    tensors = {
        **unet_to_ldm(c.unet.state_dict(), dict(c.unet.config)),
        **vae_to_ldm(c.vae.state_dict(), dict(c.vae.config)),
    }
    own = {
        "family": family,
        "unet": dict(c.unet.config),
        "vae": dict(c.vae.config),
        "scheduler": c.scheduler_config,
        "defaults": c.defaults,
        "index": c.index,
        "tokenizers": {},
    }
    for slot in SLOTS:
        te = getattr(c, slot)
        if te is None:
            continue
        prefix = _prefix(family, slot)
        convert = clip_to_ldm if prefix.endswith(".transformer.") else open_clip_to_ldm
        tensors.update(convert(te.state_dict(), prefix))
        own[slot] = te.config.to_dict()
        if with_tokenizers:
            own["tokenizers"][slot] = _tokenizer_files(getattr(c, slot.replace("text_encoder", "tokenizer")))
    return tensors, own


def _tokenizer_files(tokenizer) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tokenizer.save_pretrained(d)
        return {p.name: p.read_text(encoding="utf-8") for p in sorted(Path(d).iterdir()) if p.is_file()}
