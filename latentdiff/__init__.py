"""latentdiff: text-to-image latent diffusion. Public names are imported lazily so that
`import latentdiff` (and `latentdiff --help`) does not pull in torch."""

__version__ = "0.1.0"
__all__ = ["Pipeline", "GenerateConfig", "LatentDiffError", "UsageError"]

_LAZY = {
    "Pipeline": ("latentdiff.pipeline", "Pipeline"),
    "GenerateConfig": ("latentdiff.config", "GenerateConfig"),
    "LatentDiffError": ("latentdiff.errors", "LatentDiffError"),
    "UsageError": ("latentdiff.errors", "UsageError"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'latentdiff' has no attribute {name!r}")
