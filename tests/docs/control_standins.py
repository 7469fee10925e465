"""Stand-ins for the control files docs/control.md and the README name: ControlNets (folders, a single
file), IP-Adapter files in the h94 layout and a face embedding, all made for the
docs' `path/to/sd15` stand-in, and the pictures they steer with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from helpers import tiny_controlnet
from ip_adapter_files import FACE_DIM, h94_layout
from PIL import Image, ImageDraw
from safetensors.torch import save_file


def make_control_standins(folder: Path, model: Path) -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    vae = json.loads((model / "vae" / "config.json").read_text())
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    sketch = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(sketch).rectangle((16, 16, 48, 48), outline="white", width=2)
    for name in ("edges.png", "sketch.png"):
        sketch.save(folder / name)
    Image.open(folder / "photo.jpg").save(folder / "style.jpg")
    Image.open(folder / "photo.jpg").save(folder / "subject.png")
    np.save(folder / "face.npy", np.random.default_rng(0).standard_normal(FACE_DIM).astype(np.float32))
    for k, name in enumerate(("models/control_v11p_sd15_canny", "cn_canny", "cn_lineart")):
        tiny_controlnet(unet, factor, seed=k + 1).save_pretrained(folder / name)
    net = tiny_controlnet(unet, factor, seed=4)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, folder / "control_v11p_sd15_canny.safetensors")
    h94 = h94_layout(folder / "IP-Adapter", unet)
    shutil.copy(h94 / "ip-adapter-plus_sd15.safetensors", folder)
    shutil.copy(h94 / "ip-adapter-faceid_sd15.bin", folder)
