"""k-diffusion (Crowson, MIT; what A1111 calls) as the tests' reference: its `sampling` and `external`
modules, loaded without the package's __init__, which imports its training and evaluation code
(torchvision, clean-fid, CLIP). `pip install --no-deps k-diffusion torchdiffeq` brings what these two
modules need beside torch, scipy and torchsde; pip's full install would replace torch with a CUDA
build. Tests using it skip where it is not installed."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def load():
    """(k_diffusion.sampling, k_diffusion.external), or skip the test."""
    if "k_diffusion.external" in sys.modules:
        return sys.modules["k_diffusion.sampling"], sys.modules["k_diffusion.external"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or importlib.util.find_spec("torchdiffeq") is None:
        pytest.skip("k-diffusion is not installed (pip install --no-deps k-diffusion torchdiffeq)")
    package = types.ModuleType("k_diffusion")
    package.__spec__ = spec
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = package
    # utils.py imports torchvision's transforms for image helpers the samplers never call
    stubs = {}
    if importlib.util.find_spec("torchvision") is None:
        functional = _stub("torchvision.transforms.functional")
        transforms = _stub("torchvision.transforms", functional=functional)
        stubs = {"torchvision": _stub("torchvision", transforms=transforms), "torchvision.transforms": transforms}
        stubs["torchvision.transforms.functional"] = functional
    sys.modules.update(stubs)
    try:
        sampling = importlib.import_module("k_diffusion.sampling")
        external = importlib.import_module("k_diffusion.external")
    finally:
        for name in stubs:
            sys.modules.pop(name, None)
    return sampling, external
