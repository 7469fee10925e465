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
