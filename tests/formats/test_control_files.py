"""ControlNet and T2I-Adapter single files as the A1111 extension and ComfyUI have them
(formats/control_files.py, formats/adapter_keys.py): each written here in its original layout from
a tiny diffusers model, loaded through `Control(image, "x.safetensors")`, and held to the same
model given as an object (bit-equal weights, equal pixels) and to diffusers' pipelines (<= 1/255).

How the original layouts are made (not by inverting our reader): a ControlNet's UNet-shaped part
goes through latentdiff's UNet writer `unet_to_ldm` (held to diffusers' reader in
test_single_file.py) while the reader uses diffusers' `convert_controlnet_checkpoint`; its
control-only names (zero_convs, middle_block_out, input_hint_block) are written by hand here from
diffusers' DIFFUSERS_TO_LDM_MAPPING. The T2I-Adapter names follow the table of diffusers'
scripts/convert_original_t2i_adapter.py, and one test spells that table out for a file.
"""

import os
import shutil
import struct

import pytest
import torch
from helpers import max_pixel_diff, noise_image, tiny_controlnet
from safetensors.torch import save_file

from latentdiff import Control, Pipeline
from latentdiff.errors import UsageError
from latentdiff.formats.control_files import ADAPTER, CONTROLNET, ControlFile, detect_control
from latentdiff.formats.ldm_keys import UNET_PREFIX, unet_to_ldm
from latentdiff.sampling.loop import make_scheduler
from latentdiff.workflows.control import control_units

MAP = noise_image((64, 64), seed=3)
RUN = dict(steps=3, guidance=5.0, seed=7, scheduler="euler")


# ---- the original layouts -------------------------------------------------------------------
def controlnet_original(net, unet_config: dict, prefix: str = "control_model.") -> dict:
    sd = net.state_dict()
    shared = {k: v for k, v in sd.items() if not k.startswith("controlnet_")}
    out = {k.removeprefix(UNET_PREFIX): v for k, v in unet_to_ldm(shared, unet_config).items()}
    stages = len(net.config.conditioning_embedding_out_channels)
    for key, value in sd.items():
        tail = key.rsplit(".", 1)[1]
        if key.startswith("controlnet_down_blocks."):
            out[f"zero_convs.{key.split('.')[1]}.0.{tail}"] = value
        elif key.startswith("controlnet_mid_block."):
            out[f"middle_block_out.0.{tail}"] = value
        elif key.startswith("controlnet_cond_embedding."):
            part = key.split(".")[1]
            index = 0 if part == "conv_in" else 4 * stages - 2 if part == "conv_out" else 2 * int(key.split(".")[2]) + 2
            out[f"input_hint_block.{index}.{tail}"] = value
    return {prefix + k: v.contiguous() for k, v in out.items()}


def adapter_original(adapter) -> dict:
    per, light = adapter.config.num_res_blocks, adapter.config.adapter_type == "light_adapter"
    out = {}
    for key, value in adapter.state_dict().items():
        parts = key.removeprefix("adapter.").split(".")
        if light:
            parts = ["body" if p == "resnets" else p for p in parts]
        elif parts[0] == "body" and parts[2] == "resnets":
            parts = ["body", str(int(parts[1]) * per + int(parts[3])), *parts[4:]]
        elif parts[0] == "body":  # in_conv, on the block's first ResNet
            parts = ["body", str(int(parts[1]) * per), *parts[2:]]
        out[".".join(parts)] = value.contiguous()
    return out


def tiny_adapter(channels, factor: int, seed: int, kind: str = "full_adapter", in_channels: int = 3, per: int = 2):
    from diffusers import T2IAdapter

    torch.manual_seed(seed)
    return T2IAdapter(in_channels, list(channels), per, factor, kind).eval()


def write(sd: dict, path, pickle: bool = False):
    torch.save(sd, path) if pickle else save_file(sd, str(path))
    return path


def run(pipe, units):
    return pipe("a red apple", controls=units, **RUN)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def sd1(tiny_sd1):
    pipe = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp32")
    pipe.progress = False
    return pipe


@pytest.fixture(scope="module")
def cn(sd1):
    return tiny_controlnet(sd1.components.unet, sd1.scale_factor, 1)


# ---- ControlNet -----------------------------------------------------------------------------
def test_original_controlnet_file_matches_folder_and_diffusers(sd1, cn, tiny_sd1, tmp_path):
    from diffusers import StableDiffusionControlNetPipeline

    folder = tmp_path / "folder"
    cn.save_pretrained(folder)
    file = write(controlnet_original(cn, dict(sd1.components.unet.config)), tmp_path / "control_sd15_x.safetensors")
    mine = run(sd1, [Control(MAP, str(file), 0.8)])
    assert same_weights(sd1._control_nets[file.resolve()], cn)
    assert max_pixel_diff(mine, run(sd1, [Control(MAP, folder, 0.8)])) == 0
    assert max_pixel_diff(mine, run(sd1, None)) > 8, "the control must change the picture"
    ref = StableDiffusionControlNetPipeline.from_pretrained(
        tiny_sd1, controlnet=cn, safety_checker=None, requires_safety_checker=False
    )
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(sd1.components.scheduler_config, "euler")
    theirs = ref(
        "a red apple",
        image=MAP,
        num_inference_steps=3,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(7),
        controlnet_conditioning_scale=0.8,
    ).images
    assert max_pixel_diff(mine, theirs) <= 1


@pytest.mark.parametrize("form", ["bare", "diffusers", "pickle"])
def test_other_controlnet_forms_load_the_same_weights(sd1, cn, tmp_path, form):
    """Without the control_model. prefix; diffusers' layout in one renamed file; a .pth (opt-in)."""
    if form == "diffusers":
        cn.save_pretrained(tmp_path / "f")
        file = tmp_path / "controlnet.safetensors"
        shutil.copy(tmp_path / "f" / "diffusion_pytorch_model.safetensors", file)
    else:
        sd = controlnet_original(
            cn, dict(sd1.components.unet.config), prefix="" if form == "bare" else "control_model."
        )
        file = write(sd, tmp_path / ("x.pth" if form == "pickle" else "x.safetensors"), pickle=form == "pickle")
    run(sd1, [Control(MAP, file, 0.8, allow_pickle=form == "pickle")])
    assert same_weights(sd1._control_nets[file.resolve()], cn)


def test_hint_encoder_of_released_depth_converts_as_diffusers_does(sd1):
    """Our hint-encoder names (any depth) agree with diffusers' converter on the released 4 stages."""
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    from latentdiff.formats.control_files import controlnet_to_diffusers

    net = ControlNetModel.from_unet(sd1.components.unet, conditioning_embedding_out_channels=(4, 4, 4, 4))
    original = controlnet_original(net, dict(sd1.components.unet.config))
    theirs = convert_controlnet_checkpoint(original, {"layers_per_block": 1})
    mine = controlnet_to_diffusers(original, "original")
    assert mine.keys() == theirs.keys() == net.state_dict().keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.slow
def test_sdxl_controlnet_files_match_diffusers(tiny_sdxl, tmp_path):
    from diffusers import StableDiffusionXLControlNetPipeline

    pipe = Pipeline.from_pretrained(tiny_sdxl, device="cpu", dtype="fp32")
    pipe.progress = False
    net = tiny_controlnet(pipe.components.unet, pipe.scale_factor, 5)
    file = write(controlnet_original(net, dict(pipe.components.unet.config)), tmp_path / "xl.safetensors")
    assert any(".label_emb." in k for k in file_keys(file)), "SDXL's added embedding in the original layout"
    mine = pipe("a red apple", controls=[Control(MAP, file, 0.7)], **RUN)
    assert same_weights(pipe._control_nets[file.resolve()], net)
    as_diffusers = write({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "xl-d.safetensors")
    assert same_weights(control_units(pipe, [Control(MAP, as_diffusers)], "balanced")[0].net, net)
    ref = StableDiffusionXLControlNetPipeline.from_pretrained(tiny_sdxl, controlnet=net, add_watermarker=False)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(pipe.components.scheduler_config, "euler")
    size = pipe.native_size
    theirs = ref(
        "a red apple",
        image=MAP,
        num_inference_steps=3,
        guidance_scale=5.0,
        height=size,
        width=size,
        generator=torch.Generator().manual_seed(7),
        controlnet_conditioning_scale=0.7,
    ).images
    assert max_pixel_diff(mine, theirs) <= 1


def file_keys(path) -> list:
    from latentdiff.formats.detect import read_header

    return list(read_header(path)[0])


# ---- T2I-Adapter ----------------------------------------------------------------------------
def test_original_adapter_file_follows_diffusers_script_table(sd1, tmp_path):
    """The names of convert_original_t2i_adapter.py's table, spelled out for 2 blocks of 2 ResNets."""
    adapter = tiny_adapter([32, 64], sd1.scale_factor, 4)
    names = {"conv_in.weight", "conv_in.bias", "body.2.in_conv.weight", "body.2.in_conv.bias"}
    names |= {f"body.{k}.{b}.{w}" for k in range(4) for b in ("block1", "block2") for w in ("weight", "bias")}
    assert set(adapter_original(adapter)) == names
    light = tiny_adapter([32, 64], sd1.scale_factor, 4, "light_adapter", per=4)
    assert "body.2.body.3.block2.bias" in adapter_original(light) and "body.0.out_conv.weight" in adapter_original(
        light
    )


@pytest.mark.parametrize(
    "kind,in_channels,pickle", [("full_adapter", 3, False), ("full_adapter", 1, True), ("light_adapter", 3, False)]
)
def test_original_adapter_files_match_diffusers(sd1, tiny_sd1, tmp_path, kind, in_channels, pickle):
    from diffusers import StableDiffusionAdapterPipeline

    chans = list(sd1.components.unet.config.block_out_channels)
    adapter = tiny_adapter(chans, sd1.scale_factor, 4, kind, in_channels, per=4 if kind == "light_adapter" else 2)
    file = write(adapter_original(adapter), tmp_path / f"t2iadapter_x.{'pth' if pickle else 'safetensors'}", pickle)
    mine = run(sd1, [Control(MAP, file, 0.8, allow_pickle=pickle)])
    assert same_weights(sd1._control_nets[file.resolve()], adapter)
    assert max_pixel_diff(mine, run(sd1, [Control(MAP, adapter, 0.8)])) == 0
    ref = StableDiffusionAdapterPipeline.from_pretrained(
        tiny_sd1, adapter=adapter, safety_checker=None, requires_safety_checker=False
    )
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(sd1.components.scheduler_config, "euler")
    theirs = ref(
        "a red apple",
        image=MAP.convert("L") if in_channels == 1 else MAP,
        num_inference_steps=3,
        guidance_scale=5.0,
        generator=[torch.Generator().manual_seed(7)],
        adapter_conditioning_scale=0.8,
    ).images
    assert max_pixel_diff(mine, theirs) <= 1
    assert max_pixel_diff(mine, run(sd1, None)) > 8


def test_sdxl_adapter_files_load_the_same_weights(tiny_sdxl, tmp_path):
    pipe = Pipeline.from_pretrained(tiny_sdxl, device="cpu", dtype="fp32")
    pipe.progress = False
    chans = list(pipe.components.unet.config.block_out_channels)
    adapter = tiny_adapter([*chans, chans[-1]], 2 * pipe.scale_factor, 6, "full_adapter_xl")
    original = write(adapter_original(adapter), tmp_path / "xl.safetensors")
    as_diffusers = write({k: v.contiguous() for k, v in adapter.state_dict().items()}, tmp_path / "xl-d.safetensors")
    mine = [pipe("a red apple", controls=[Control(MAP, f, 0.9)], **RUN) for f in (original, as_diffusers)]
    for f in (original, as_diffusers):
        assert same_weights(pipe._control_nets[f.resolve()], adapter)
    assert max_pixel_diff(mine[0], pipe("a red apple", controls=[Control(MAP, adapter, 0.9)], **RUN)) == 0
    assert pipe._control_nets[original.resolve()].config.adapter_type == "full_adapter_xl"


# ---- refusals -------------------------------------------------------------------------------
def test_pickle_only_with_allow_pickle(sd1, cn, tiny_sd1, tmp_path):
    file = write(controlnet_original(cn, dict(sd1.components.unet.config)), tmp_path / "control.pth", pickle=True)
    with pytest.raises(UsageError, match=r"controls\[0\]\.model: .*control\.pth is a pickle file.*--allow-pickle"):
        run(sd1, [Control(MAP, file)])
    trusting = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp32", allow_pickle=True)
    trusting.progress = False
    assert max_pixel_diff(run(trusting, [Control(MAP, file)]), run(sd1, [Control(MAP, cn)])) == 0


def test_another_family_is_refused_naming_both(sd1, tiny_sdxl, tmp_path):
    xl = Pipeline.from_pretrained(tiny_sdxl, device="cpu", dtype="fp32")
    net = tiny_controlnet(xl.components.unet, xl.scale_factor, 5)
    file = write(controlnet_original(net, dict(xl.components.unet.config)), tmp_path / "xl.safetensors")
    with pytest.raises(
        UsageError,
        match=r"xl\.safetensors is a ControlNet for another model family "
        r"\(text-embedding width 72.*this model is SD 1\.x/2\.x \(text-embedding width 32",
    ):
        run(sd1, [Control(MAP, file)])
    chans = list(xl.components.unet.config.block_out_channels)
    adapter = tiny_adapter([*chans, chans[-1]], 2 * xl.scale_factor, 6, "full_adapter_xl")
    file = write(adapter_original(adapter), tmp_path / "xl-adapter.safetensors")
    with pytest.raises(
        UsageError,
        match=r"is an? .*full T2I-Adapter for another model family \(downscale 8\); "
        r"this model is SD 1\.x/2\.x \(downscale 4",
    ):
        run(sd1, [Control(MAP, file)])


def _bytes(data: bytes):
    def make(path, _):
        path.write_bytes(data)
        return path

    return make


def _truncated(path, original):
    data = write(original, path).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _fifo(path, _):
    os.mkfifo(path)
    return path


LORA = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}
NOT_CONTROLS = {
    "lora.safetensors": (lambda p, _: write(LORA, p), "is a LoRA"),
    "empty.safetensors": (_bytes(b""), "is empty"),
    "noise.safetensors": (_bytes(bytes(range(64))), "neither safetensors nor a torch checkpoint"),
    "half.safetensors": (_truncated, "truncated or corrupt"),
    "nothing.safetensors": (lambda p, _: write({}, p), "is an empty checkpoint, not a ControlNet or T2I-Adapter"),
    "ip.safetensors": (lambda p, _: write({"image_proj.proj.weight": torch.zeros(2, 2)}, p), "is an IP-Adapter"),
    "fifo.safetensors": (_fifo, "FIFO"),
    "deep.safetensors": (
        _bytes(struct.pack("<Q", 200_002) + b'{"a":' + b"[" * 99_998 + b"]" * 99_998 + b"}"),
        "levels deep; at most 32",
    ),
}


@pytest.mark.parametrize("name", list(NOT_CONTROLS))
def test_a_file_that_is_no_control_is_one_line(sd1, cn, tmp_path, name):
    make, says = NOT_CONTROLS[name]
    path = make(tmp_path / name, controlnet_original(cn, dict(sd1.components.unet.config)))
    with pytest.raises(UsageError, match=says) as e:
        run(sd1, [Control(MAP, path)])
    assert name in str(e.value) and "\n" not in str(e.value)


def test_model_files_are_named_as_what_they_are(sd1, tiny_sd1, tmp_path):
    from latentdiff.formats.convert import convert

    checkpoint = convert(tiny_sd1, tmp_path / "model.safetensors")
    unet = tmp_path / "unet.safetensors"
    shutil.copy(tiny_sd1 / "unet" / "diffusion_pytorch_model.safetensors", unet)
    for path, says in ((checkpoint, "a Stable Diffusion checkpoint"), (unet, "a diffusers UNet")):
        with pytest.raises(UsageError, match=f"{path.name} is {says}"):
            run(sd1, [Control(MAP, path)])


# ---- the detection table, at released sizes (tensors on the meta device: no weights) --------
def _released_controlnet(family: str, prefix: str):
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel, UNet2DConditionModel

    from latentdiff.families.released import family_configs

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(family_configs(family)["unet"])
        net = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    return controlnet_original(net, dict(unet.config), prefix) if prefix is not None else net.state_dict()


def _released_adapter(kind: str, in_channels: int, original: bool):
    from accelerate import init_empty_weights
    from diffusers import T2IAdapter

    light = kind == "light_adapter"
    with init_empty_weights():
        adapter = T2IAdapter(
            in_channels,
            [320, 640, 1280] if light else [320, 640, 1280, 1280],
            4 if light else 2,
            16 if kind.endswith("_xl") else 8,
            kind,
        )
    return adapter_original(adapter) if original else adapter.state_dict()


TABLE = [
    (
        lambda: _released_controlnet("sd1", "control_model."),
        ControlFile(CONTROLNET, "original", 3, 768),
        "an SD 1.x ControlNet",
    ),
    (lambda: _released_controlnet("sd2", ""), ControlFile(CONTROLNET, "original", 3, 1024), "an SD 2.x ControlNet"),
    (
        lambda: _released_controlnet("sdxl", "control_model."),
        ControlFile(CONTROLNET, "original", 3, 2048),
        "an SDXL ControlNet",
    ),
    (lambda: _released_controlnet("sdxl", None), ControlFile(CONTROLNET, "diffusers", 3, 2048), "an SDXL ControlNet"),
    (
        lambda: _released_adapter("full_adapter", 3, True),
        ControlFile(ADAPTER, "original", 3, variant="full", downscale=8),
        "an SD 1.x full T2I-Adapter",
    ),
    (
        lambda: _released_adapter("full_adapter", 1, True),
        ControlFile(ADAPTER, "original", 1, variant="full", downscale=8),
        "an SD 1.x full T2I-Adapter",
    ),
    (
        lambda: _released_adapter("light_adapter", 3, True),
        ControlFile(ADAPTER, "original", 3, variant="light", downscale=8),
        "an SD 1.x light T2I-Adapter",
    ),
    (
        lambda: _released_adapter("full_adapter_xl", 3, True),
        ControlFile(ADAPTER, "original", 3, variant="full", downscale=16),
        "an SDXL full T2I-Adapter",
    ),
    (
        lambda: _released_adapter("full_adapter_xl", 1, False),
        ControlFile(ADAPTER, "diffusers", 1, variant="full", downscale=16),
        "an SDXL full T2I-Adapter",
    ),
]


@pytest.mark.parametrize("make,expected,name", TABLE)
def test_detection_table(make, expected, name):
    facts = detect_control({k: list(v.shape) for k, v in make().items()}, "x")
    got = ControlFile(
        facts.kind, facts.layout, facts.hint, facts.width, variant=facts.variant, downscale=facts.downscale
    )
    assert got == expected and facts.name == name
    if facts.kind == CONTROLNET:
        assert facts.residuals == (320,) * 4 + (640,) * 3 + (1280,) * (3 if facts.width == 2048 else 6)
