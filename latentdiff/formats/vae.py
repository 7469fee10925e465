"""`--vae DIR|FILE`: a VAE to decode (and encode) with instead of the model's own.

Accepted: a diffusers VAE folder (config.json + weights), a whole diffusers model folder (its
`vae/`), or one safetensors file in the original layout (`encoder.down.0...`, with or without
`first_stage_model.`, e.g. the VAEs A1111 users download) or in the diffusers layout. A file
carries no config, so it takes the model's VAE config: VAEs are swapped within one family.
"""

from __future__ import annotations

from pathlib import Path

from latentdiff.errors import ModelError
from latentdiff.formats.detect import describe, read_header
from latentdiff.models.assemble import build_module, load_vae
from latentdiff.models.weights import SAFETENSORS, load_state_dict, sniff_format
from latentdiff.runtime.libraries import quiet_libraries
from latentdiff.runtime.reading import check_regular


def load_vae_ref(ref, model_vae_config: dict, allow_pickle: bool = False):
    path = Path(ref).expanduser()
    if path.is_dir():
        return load_vae(path / "vae" if (path / "vae" / "config.json").exists() else path, allow_pickle)
    _check_file(path, ref)
    return _vae_from_file(path, dict(model_vae_config), allow_pickle)


def _check_file(path: Path, ref) -> None:
    if not path.exists():
        raise ModelError(f"--vae {ref}: no such file or folder")
    check_regular(path, "--vae", ModelError)  # a FIFO would block the read


def _vae_from_file(path: Path, config: dict, allow_pickle: bool):
    return vae_from_state_dict(load_state_dict(path, allow_pickle), config, path)


def vae_from_state_dict(sd: dict, config: dict, path: Path):
    """An AutoencoderKL of `config` with the tensors `sd` (diffusers' or the original layout) of `path`."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    quiet_libraries()
    vae_sd = sd if _layout(list(sd), path) == "diffusers" else convert_ldm_vae_checkpoint(sd, config)
    return build_module(AutoencoderKL, config, vae_sd, path)


def _layout(names: list[str], path: Path) -> str:
    """ "diffusers" or "original" (LDM) by the tensor names; anything else is refused."""
    if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in names):
        return "diffusers"
    if any(k.startswith(("encoder.down.", "first_stage_model.encoder.down.", "vae.encoder.down.")) for k in names):
        return "original"
    raise ModelError(f"--vae {path} is {describe(names)}, not a VAE")


def check_vae_ref(ref) -> None:
    """What load_vae_ref refuses without reading tensor data (a missing path, a safetensors file
    that is no VAE), before any model loads."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return
    _check_file(path, ref)
    if sniff_format(path) == SAFETENSORS:
        _layout(list(read_header(path)[0]), path)
