"""The hires fix's upscaler names, as A1111 lists them (our name -> A1111's label)."""

# The hires fix's latent upscalers, A1111's (its shared.latent_upscale_modes): our name -> (A1111's
# label, torch's interpolation mode, antialias). "latent" is A1111's default, "Latent".
LATENT_UPSCALERS = {
    "latent": ("Latent", "bilinear", False),
    "latent-antialiased": ("Latent (antialiased)", "bilinear", True),
    "latent-bicubic": ("Latent (bicubic)", "bicubic", False),
    "latent-bicubic-antialiased": ("Latent (bicubic antialiased)", "bicubic", True),
    "latent-nearest": ("Latent (nearest)", "nearest", False),
    "latent-nearest-exact": ("Latent (nearest-exact)", "nearest-exact", False),
}

# The hires fix's pixel upscalers, A1111's (its UpscalerNone, UpscalerLanczos, UpscalerNearest): our name ->
# A1111's label; also an upscaler model file (ESRGAN-type: workflows/a1111_upscale.py).
PIXEL_UPSCALERS = {"none": "None", "lanczos": "Lanczos", "nearest": "Nearest"}

# A1111's names of the upscaler model files it downloads (its modules/realesrgan_model.py and dat_model.py):
# the file's stem -> (A1111's name, scale). A1111 names any other model file by its stem.
A1111_MODEL_NAMES = {
    "RealESRGAN_x4plus": ("R-ESRGAN 4x+", 4),
    "RealESRGAN_x4plus_anime_6B": ("R-ESRGAN 4x+ Anime6B", 4),
    "realesr-general-x4v3": ("R-ESRGAN General 4xV3", 4),
    "realesr-general-wdn-x4v3": ("R-ESRGAN General WDN 4xV3", 4),
    "realesr-animevideov3": ("R-ESRGAN AnimeVideo", 4),
    "RealESRGAN_x2plus": ("R-ESRGAN 2x+", 2),
    "DAT_x2": ("DAT x2", 2),
    "DAT_x3": ("DAT x3", 3),
    "DAT_x4": ("DAT x4", 4),
}
MODEL_SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt", ".bin")  # formats/sr_model.SUFFIXES (torch-free here)


def model_label(ref: str) -> str:
    """A1111's name of an upscaler model file: its name for the files it downloads, else the file's stem."""
    stem = ref.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in MODEL_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return A1111_MODEL_NAMES.get(stem, (stem,))[0]
