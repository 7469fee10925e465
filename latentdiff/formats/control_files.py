"""ControlNet and T2I-Adapter files as users have them, told apart by their tensors (never by
their names): the single files the A1111 ControlNet extension and ComfyUI load
(`control_v11p_sd15_canny.safetensors`/`.pth` in the original ControlNet layout, with or without
its `control_model.` prefix; SDXL ControlNets in that layout or in diffusers' one saved as a file;
`t2iadapter_*.pth` in TencentARC's layout, full and light adapters; diffusers' adapter layout).

Sizes come from the tensors' shapes; what shapes cannot say (attention heads, norm groups, the
time embedding's settings) is the base UNet's config: a ControlNet is a trainable copy of its
base UNet's encoder, and diffusers' `ControlNetModel.from_unet` copies the same fields. Nothing is
fetched. The original ControlNet layout goes through diffusers' own converter
(`convert_controlnet_checkpoint`, which leaves out SDXL's `label_emb`; its table maps that here);
TencentARC's adapter layout through `formats/adapter_keys.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from latentdiff.errors import ModelError
from latentdiff.formats.adapter_keys import (
    DIFFUSERS,
    ORIGINAL,
    adapter_config,
    adapter_layout,
    adapter_to_diffusers,
    input_channels,
)
from latentdiff.formats.detect import UNET_IN, describe, read_header
from latentdiff.models.assemble import build_module
from latentdiff.models.weights import SAFETENSORS, load_state_dict, sniff_format

CONTROLNET, ADAPTER = "ControlNet", "T2I-Adapter"
CN_PREFIX, HINT = "control_model.", "input_hint_block."
_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL", 1280: "SDXL refiner"}  # text-embedding widths
_DOWNSCALES = {8: "SD 1.x", 16: "SDXL"}  # T2I-Adapters: pixel-unshuffle factor = the UNet's latent stride
# What else a file that names one of these may be; checked before the controls (they share names)
_OTHERS = [
    ("a Control-LoRA (Stability's LoRA of a ControlNet), which is not supported", ("lora_controlnet",)),
    ("a ControlNet-LLLite (kohya), which is not supported", ("lllite_",)),
    ("a ControlNet Union (several controls in one), which is not supported", ("task_embedding", "control_add_emb")),
    ("a T2I style adapter (CLIP-vision tokens), which is not supported", ("style_embedding", "transformer_layes")),
    ("a difference ControlNet (stored as a difference to its base), which is not supported", ("difference",)),
    ("an IP-Adapter (an image prompt, not a control)", ("image_proj.", "ip_adapter.")),
]
# Fields of the base UNet's config a ControlNet shares and its tensors do not show (from_unet's list)
_FROM_BASE = (
    "flip_sin_to_cos",
    "freq_shift",
    "only_cross_attention",
    "downsample_padding",
    "mid_block_scale_factor",
    "act_fn",
    "norm_num_groups",
    "norm_eps",
    "attention_head_dim",
    "num_attention_heads",
    "class_embed_type",
    "num_class_embeds",
    "upcast_attention",
    "resnet_time_scale_shift",
    "addition_time_embed_dim",
    "encoder_hid_dim",
    "encoder_hid_dim_type",
)


@dataclass(frozen=True)
class ControlFile:
    """What a control file is, from its tensor names and shapes alone."""

    kind: str  # CONTROLNET or ADAPTER
    layout: str  # ORIGINAL or DIFFUSERS
    hint: int  # channels of the control image the network takes (3 RGB, 1 a grey map)
    width: int = 0  # ControlNet: its text-embedding (cross-attention) width
    residuals: tuple = ()  # ControlNet: the widths of the residuals it adds, down blocks then mid block
    variant: str = ""  # T2I-Adapter: "full" or "light"
    downscale: int = 0  # T2I-Adapter: its pixel-unshuffle factor

    @property
    def family(self) -> str | None:
        """The released family a file of these sizes is made for (None: not a released size)."""
        return _WIDTHS.get(self.width) if self.kind == CONTROLNET else _DOWNSCALES.get(self.downscale)

    @property
    def name(self) -> str:
        kind = f"{self.variant} {ADAPTER}" if self.kind == ADAPTER else CONTROLNET
        what = f"{self.family} {kind}" if self.family else kind
        return f"{'an' if what[0] in 'AEIOS' else 'a'} {what}"

    @property
    def size(self) -> str:
        """The sizes a base model must share with it, as words."""
        if self.kind == ADAPTER:
            return f"downscale {self.downscale}" + (
                f", block widths {_widths(self.residuals)}" if self.residuals else ""
            )
        return f"text-embedding width {self.width}, block widths {_widths(self.residuals)}"


def net_facts(net) -> ControlFile:
    """The facts of a loaded diffusers ControlNetModel or T2IAdapter, as of its file."""
    return detect_control({k: list(v.shape) for k, v in net.state_dict().items()}, type(net).__name__)


def _widths(residuals) -> str:
    return ", ".join(str(w) for k, w in enumerate(residuals) if k == 0 or w != residuals[k - 1])


def needs(unet: dict, sdxl: bool, vae_factor: int, kind: str) -> ControlFile:
    """What a unit of `kind` for a base UNet of this config (SDXL or not, VAE factor) must be."""
    if kind == ADAPTER:
        chans = tuple(unet["block_out_channels"])
        features = chans + chans[-1:] if sdxl else chans  # SDXL adapters make one feature more
        return ControlFile(ADAPTER, DIFFUSERS, 0, residuals=features, downscale=vae_factor * (2 if sdxl else 1))
    chans, per = list(unet["block_out_channels"]), int(unet["layers_per_block"])
    down = [chans[0]] + [c for i, c in enumerate(chans) for _ in range(per + (i < len(chans) - 1))]
    return ControlFile(CONTROLNET, DIFFUSERS, 0, int(unet["cross_attention_dim"]), (*down, chans[-1]))


def misfit(facts: ControlFile, unet: dict, sdxl: bool, vae_factor: int) -> ControlFile | None:
    """What the base needs where the file does not fit it (None: it fits)."""
    want = needs(unet, sdxl, vae_factor, facts.kind)
    if facts.kind == ADAPTER:
        fits = not facts.residuals or facts.residuals[: len(want.residuals)] == want.residuals
        ok = fits and facts.downscale == want.downscale and not (sdxl and facts.variant == "light")
    else:
        ok = (facts.width, facts.residuals) == (want.width, want.residuals)
    return None if ok else want


# ---- detection ------------------------------------------------------------------------------
def read_control(path: Path, allow_pickle: bool = False) -> tuple[dict, dict | None]:
    """(name -> shape, tensors or None): a safetensors file's header alone, a pickle's tensors
    (read only with allow_pickle, weights_only; models/weights.py says why not otherwise)."""
    if sniff_format(path) == SAFETENSORS:
        return read_header(path)[0], None
    sd = load_state_dict(path, allow_pickle)
    return {k: list(v.shape) for k, v in sd.items() if hasattr(v, "shape")}, sd


def detect_control(shapes: dict, where) -> ControlFile:
    """What a ControlNet or T2I-Adapter file is; any other file is one ModelError saying what it
    looks like instead."""
    names = list(shapes)
    for what, marks in _OTHERS:
        if any(m in k for k in names for m in marks):
            raise ModelError(f"{where} is {what}")
    inner = {k.removeprefix(CN_PREFIX): v for k, v in shapes.items() if k.startswith(CN_PREFIX)} or shapes
    if HINT + "0.weight" in inner and "time_embed.0.weight" in inner:
        return _controlnet(inner, ORIGINAL, HINT + "0.weight", "zero_convs.{}.0.weight", "middle_block_out.0")
    if "controlnet_cond_embedding.conv_in.weight" in shapes:
        cond = "controlnet_cond_embedding.conv_in.weight"
        return _controlnet(shapes, DIFFUSERS, cond, "controlnet_down_blocks.{}.weight", "controlnet_mid_block")
    adapter = adapter_layout(shapes)
    if adapter is not None:
        hint, downscale = input_channels(shapes, *adapter, where)
        features = _features(adapter_config(shapes, False, where)) if adapter[0] == DIFFUSERS else ()
        return ControlFile(ADAPTER, adapter[0], hint, residuals=features, variant=adapter[1], downscale=downscale)
    raise ModelError(f"{where} is {_what_else(names)}, not a ControlNet or T2I-Adapter")


def _controlnet(shapes: dict, layout: str, cond: str, zero: str, mid: str) -> ControlFile:
    width = next((v[1] for k, v in shapes.items() if k.endswith("attn2.to_k.weight")), 0)
    down, k = [], 0
    while zero.format(k) in shapes:
        down.append(shapes[zero.format(k)][0])
        k += 1
    residuals = (*down, shapes.get(f"{mid}.weight", [0])[0])
    return ControlFile(CONTROLNET, layout, int(shapes[cond][1]), int(width), tuple(int(w) for w in residuals))


def _features(config: dict) -> tuple:
    """The widths of an adapter's features (a light adapter repeats its last width once more)."""
    widths = list(config["channels"])
    return tuple(widths + widths[-1:] if config["adapter_type"] == "light_adapter" else widths)


def _what_else(names: list[str]) -> str:
    if UNET_IN in names:
        return "a Stable Diffusion checkpoint (a --model)"
    if any(k.startswith("up_blocks.") for k in names) and any(k.startswith("down_blocks.") for k in names):
        return "a diffusers UNet"
    return describe(names).removesuffix(", not a whole model")


# ---- building -------------------------------------------------------------------------------
def load_control_file(path: Path, facts: ControlFile, sd: dict | None, base: dict, sdxl: bool):
    """The diffusers ControlNetModel or T2IAdapter of a detected file (`sd` its tensors when
    already read), sized from its shapes and `base` (the base UNet's config)."""
    from diffusers import ControlNetModel, T2IAdapter

    if sd is None:
        sd = load_state_dict(path)
    if facts.kind == CONTROLNET:
        sd = controlnet_to_diffusers(sd, facts.layout)
        config = controlnet_config({k: list(v.shape) for k, v in sd.items()}, base)
        return _build(ControlNetModel, config, sd, path)
    blocks = len(base["block_out_channels"]) + (1 if sdxl else 0)  # SDXL adapters make one feature more
    sd = adapter_to_diffusers(sd, facts.variant, blocks, path) if facts.layout == ORIGINAL else sd
    config = adapter_config({k: list(v.shape) for k, v in sd.items()}, sdxl, path)
    return _build(T2IAdapter, config, sd, path)


def _build(cls, config: dict, sd: dict, where):
    try:
        return build_module(cls, config, sd, where)
    except (ValueError, TypeError) as e:  # a config diffusers refuses (e.g. heads and blocks disagree)
        raise ModelError(f"{where} does not fit its base model: {str(e).splitlines()[0]}") from None


def controlnet_to_diffusers(sd: dict, layout: str) -> dict:
    """A ControlNet's tensors under diffusers' names: the original layout through diffusers'
    converter, plus what it leaves out: SDXL's added embedding (by diffusers' own table) and a hint
    encoder of another depth than the released 4 stages (it takes the last at `input_hint_block.14`)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING, convert_controlnet_checkpoint

    if layout == DIFFUSERS:
        return sd
    inner = {k.removeprefix(CN_PREFIX): v for k, v in sd.items() if k.startswith(CN_PREFIX)} or dict(sd)
    hint = {k: inner.pop(k) for k in [k for k in inner if k.startswith(HINT)]}
    per = _layers_per_block(inner)
    out = {k: v for k, v in convert_controlnet_checkpoint(inner, {"layers_per_block": per}).items() if v is not None}
    for new, old in DIFFUSERS_TO_LDM_MAPPING["controlnet"]["addition_embed_type"].items():
        if old in inner:
            out[new] = inner[old]
    return {**out, **_hint_to_diffusers(hint)}


def _hint_to_diffusers(hint: dict) -> dict:
    """input_hint_block.{0, 2, 4, ..., last} (SiLUs between) -> conv_in, blocks.{0, 1, ...}, conv_out."""
    last = max((int(k.split(".")[1]) for k in hint), default=0)
    out = {}
    for key, value in hint.items():
        index, tail = int(key.split(".")[1]), key.split(".", 2)[2]
        part = "conv_in" if index == 0 else "conv_out" if index == last else f"blocks.{index // 2 - 1}"
        out[f"controlnet_cond_embedding.{part}.{tail}"] = value
    return out


def _layers_per_block(inner: dict) -> int:
    """From the original layout: input blocks = 1 + blocks x layers + (blocks - 1) downsamplers."""
    blocks = {int(k.split(".")[1]) for k in inner if k.startswith("input_blocks.")}
    downs = {int(k.split(".")[1]) for k in inner if k.startswith("input_blocks.") and ".0.op." in k}
    n = len(downs) + 1
    per, rest = divmod(len(blocks) - 1 - len(downs), n)
    if rest or per < 1:
        raise ModelError(f"its {len(blocks)} input blocks do not divide into {n} down blocks")
    return per


def controlnet_config(shapes: dict, base: dict) -> dict:
    """A ControlNetModel config: the sizes its diffusers-named tensors show, the rest the base's."""
    n = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("down_blocks."))
    per = len({k.split(".")[3] for k in shapes if k.startswith("down_blocks.0.resnets.")})
    depth = [_depth(shapes, f"down_blocks.{i}.attentions.0.") for i in range(n)]
    hint = [shapes["controlnet_cond_embedding.conv_in.weight"][0]]
    hint += [v[0] for k, v in sorted(shapes.items(), key=_block_order) if _odd_hint_block(k)]
    added = shapes.get("add_embedding.linear_1.weight")
    config = {k: base[k] for k in _FROM_BASE if k in base}
    config.update(
        in_channels=shapes["conv_in.weight"][1],
        conditioning_channels=shapes["controlnet_cond_embedding.conv_in.weight"][1],
        down_block_types=["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depth],
        mid_block_type="UNetMidBlock2DCrossAttn" if _depth(shapes, "mid_block.attentions.0.") else "UNetMidBlock2D",
        block_out_channels=[shapes[f"down_blocks.{i}.resnets.0.conv1.weight"][0] for i in range(n)],
        layers_per_block=per,
        cross_attention_dim=next((v[1] for k, v in shapes.items() if k.endswith("attn2.to_k.weight")), 1),
        transformer_layers_per_block=[d or 1 for d in depth] if any(d > 1 for d in depth) else 1,
        use_linear_projection=any(len(v) == 2 for k, v in shapes.items() if k.endswith(".proj_in.weight")),
        conditioning_embedding_out_channels=hint,
        addition_embed_type="text_time" if added else None,
        projection_class_embeddings_input_dim=added[1] if added else None,
    )
    return config


def _depth(shapes: dict, prefix: str) -> int:
    """The transformer layers under `prefix` (0: none)."""
    return len({k[len(prefix) :].split(".")[1] for k in shapes if k.startswith(prefix + "transformer_blocks.")})


def _odd_hint_block(key: str) -> bool:
    parts = key.split(".")
    return key.startswith("controlnet_cond_embedding.blocks.") and key.endswith(".weight") and int(parts[2]) % 2 == 1


def _block_order(item) -> tuple:
    parts = item[0].split(".")
    return (0, int(parts[2])) if _odd_hint_block(item[0]) else (1, 0)
