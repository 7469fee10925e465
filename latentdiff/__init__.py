"""latentdiff: text-to-image latent diffusion. Public names are imported lazily so that
`import latentdiff` (and `latentdiff --help`) does not pull in torch."""

__version__ = "0.1.0"

_LAZY = {
    "Pipeline": ("latentdiff.pipeline", "Pipeline"),
    "GenerateConfig": ("latentdiff.config.generate", "GenerateConfig"),
    "LatentDiffError": ("latentdiff.errors", "LatentDiffError"),
    "UsageError": ("latentdiff.errors", "UsageError"),
    "ModelError": ("latentdiff.errors", "ModelError"),
    "Cancelled": ("latentdiff.errors", "Cancelled"),
    "save_png": ("latentdiff.images.write", "save_png"),
    "Control": ("latentdiff.workflows.control", "Control"),
    "ImagePrompt": ("latentdiff.workflows.image_prompt", "ImagePrompt"),
}
__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'latentdiff' has no attribute {name!r}")


def __dir__():
    """The lazy public names too (tab completion, dir()), which live in no module dict yet."""
    return sorted({*globals(), *_LAZY})
