"""What a request is checked against before loading (formats/preflight.py): a model folder's facts read
raw from its configs, without importing diffusers (it takes seconds). Was part of models/configs.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from latentdiff.models.checks import MAX_TRAIN_TIMESTEPS
from latentdiff.models.configs import TEXT_PARTS, check_model_dir, denoiser_folder, is_pixel_index, read_defaults
from latentdiff.models.files import is_present, read_json_object


@dataclass(frozen=True)
class ModelFacts:
    path: Path  # the model folder the weights come from
    factor: int  # pixels per latent pixel (the VAE's downscale)
    native: int  # side in pixels of the images the model was trained at: UNet sample_size x factor
    train_timesteps: int | None
    defaults: dict  # latentdiff.json
    unet: dict
    vae: dict
    text_layers: int | None  # the fewest layers of its text encoders (clip skip's bound)


def model_facts(path: Path) -> ModelFacts | None:
    """The facts of the model folder `path`, read raw (no diffusers import: it takes seconds);
    None where only loading can tell (an upscaler, an odd config, which loading then refuses with
    its own message). A folder that is no model is refused here."""
    index = check_model_dir(path)
    if is_pixel_index(index):
        return None  # no VAE config to read the factor from: loading tells (PixelSpace's is 1)
    folder = denoiser_folder(index, path)
    unet = read_json_object(path / folder / "config.json", folder)
    vae = read_json_object(path / "vae" / "config.json", "vae")
    sample = unet.get("sample_size")
    # Anything odd (or huge): None, and loading says what is wrong.
    if not (
        _counts(vae.get("block_out_channels"), 65_536)
        and _counts(unet.get("block_out_channels"), 65_536)
        and _counts([sample])
    ):
        return None
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    timesteps = read_json_object(path / "scheduler" / "scheduler_config.json", "scheduler").get("num_train_timesteps")
    timesteps = timesteps if _counts([timesteps], MAX_TRAIN_TIMESTEPS) else None
    layers = [
        read_json_object(path / te / "config.json", "text encoder").get("num_hidden_layers")
        for te, _ in TEXT_PARTS
        if is_present(path / te / "config.json", "text encoder config")
    ]
    text_layers = min(layers) if layers and _counts(layers) else None
    return ModelFacts(path, factor, sample * factor, timesteps, read_defaults(path), unet, vae, text_layers)


def _counts(values, limit: int = 1_000_000) -> bool:
    """A short list of whole numbers from 1 to `limit`."""
    return (
        isinstance(values, list)
        and 0 < len(values) <= 16
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= limit for v in values)
    )
