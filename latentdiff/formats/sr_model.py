"""Pixel super-resolution model files (ESRGAN, Real-ESRGAN and its compact SRVGGNet, SwinIR, DAT, ...: the
.pth / .safetensors files A1111 keeps in models/ESRGAN) read by spandrel (chaiNNer's loader, which A1111
since 1.8 and ComfyUI load them with): it detects the architecture from the weights' names and shapes.
spandrel is an optional extra (`pip install 'latentdiff[upscalers]'`). Safetensors files load through our
own reader; a pickle file only with --allow-pickle, then by spandrel's restricted unpickler."""

from __future__ import annotations

from pathlib import Path

from latentdiff.errors import ModelError, UsageError
from latentdiff.models.weights import PICKLE_FLAG, SAFETENSORS, load_state_dict, sniff_format

SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt", ".bin")


def is_sr_file(ref) -> bool:
    """Whether an upscaler reference names a model file (rather than a folder or a hub id)."""
    return isinstance(ref, (str, Path)) and str(ref).lower().endswith(SUFFIXES)


def _spandrel():
    try:
        import spandrel
    except (ImportError, RuntimeError, OSError) as e:  # a torchvision built for another torch: RuntimeError
        raise UsageError(
            f"upscaler model files are read by spandrel, which is not usable here ({type(e).__name__}: "
            f"{str(e)[:120]}); pip install 'latentdiff[upscalers]'"
        ) from None
    return spandrel


def load_sr_model(path, allow_pickle: bool = False, device="cpu"):
    """spandrel's ImageModelDescriptor of the file at `path` (3-channel image to image, evaluation mode)."""
    spandrel = _spandrel()
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"upscaler model file {path} is missing")
    if sniff_format(path) == SAFETENSORS:
        sd = spandrel.canonicalize_state_dict(load_state_dict(path, allow_pickle))
    elif not allow_pickle:
        raise ModelError(f"{path} is a pickle file, which can run code when loaded; convert it to safetensors, "
                         f"or pass {PICKLE_FLAG} if you trust its source")  # fmt: skip
    else:
        try:
            sd = spandrel.ModelLoader().load_state_dict_from_file(str(path))
        except Exception as e:  # a broken file: pickle and zip raise many kinds
            raise ModelError(f"{path} is not readable as a model file: {type(e).__name__}: {str(e)[:120]}") from None
    try:
        model = spandrel.ModelLoader().load_from_state_dict(sd)
    except spandrel.UnsupportedModelError:
        raise ModelError(
            f"{path} is no upscaler model spandrel knows (ESRGAN, Real-ESRGAN, SwinIR, DAT, ...)"
        ) from None
    except (KeyError, RuntimeError, ValueError, TypeError) as e:  # a known architecture's weights, broken
        raise ModelError(f"{path}: its weights do not fit their architecture ({str(e)[:120]})") from None
    if not isinstance(model, spandrel.ImageModelDescriptor) or (model.input_channels, model.output_channels) != (3, 3):
        raise ModelError(f"{path} is a {model.architecture.name} model, not an RGB upscaler")
    return model.to(device).eval()
