"""`generate`'s IP-Adapter flags (`--image-prompt IMG[:SCALE]`, `--ip-adapter FILE`,
`--image-encoder DIR`) read into one plain record per image prompt, checked, and the records an
image made with them holds, turned back into flags for `--from`. Standard library only: this loads
at `--help` time.

An `--image-prompt` value is split as `--control` values are (config/control_flags.py): a last
field that is a number is SCALE, so paths may hold ':'; a value that names an existing file is
that file whole. IMG is a picture, or for a FaceID adapter a face-embedding file (.npy or
.safetensors).
"""

from __future__ import annotations

import os

from latentdiff.config.control_flags import beside, numbers_from_right
from latentdiff.config.flag_types import shown
from latentdiff.errors import UsageError

MAX_PROMPTS = 8
MAX_SCALE = 2.0
FACE_FILES = (".npy", ".safetensors")  # face embeddings (FaceID); anything else is a picture


def split_prompt(text: str, what: str = "--image-prompt") -> dict:
    """`IMG[:SCALE]` as {"image", "scale"} (scale None where left out)."""
    if os.path.isfile(text):
        return {"image": text, "scale": None}
    rest, numbers = numbers_from_right(text, 1, 1)
    if not rest or rest.endswith(":"):
        raise UsageError(f"{what} must be IMG[:SCALE], got {shown(text)!r}")
    return {"image": rest, "scale": numbers[0] if numbers else None}


def image_prompts(texts: list[str], ip_adapter, image_encoder, recorded=None) -> list[dict]:
    """Every --image-prompt as a checked record (image, scale, adapter, image_encoder, image_hash);
    `recorded` (from --from) holds the image's own records, which fill what the flags leave out
    (the scale, the adapter and encoder where --ip-adapter / --image-encoder are not given)."""
    n, recorded = len(texts), recorded or []
    if n > MAX_PROMPTS:
        raise UsageError(f"{n} --image-prompt given; at most {MAX_PROMPTS} are supported")
    if not n and (ip_adapter or image_encoder):
        raise UsageError("--ip-adapter and --image-encoder need --image-prompt IMG[:SCALE]")
    out = []
    for k, text in enumerate(texts):
        rec = recorded[k] if k < len(recorded) else {}
        what = f"--image-prompt {k + 1}"
        p = split_prompt(text)
        scale = rec.get("scale") if p["scale"] is None else p["scale"]
        scale = 1.0 if scale is None else scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale <= MAX_SCALE:
            raise UsageError(f"{what}: scale must be a number from 0 to {MAX_SCALE:g}, got {shown(str(scale))}")
        adapter = ip_adapter or _text(rec.get("adapter"))
        if not adapter:
            used = f" (the image used {shown(str(rec['adapter_name']), 80)})" if rec.get("adapter_name") else ""
            raise UsageError(f"--image-prompt needs --ip-adapter FILE (an ip-adapter_*.safetensors){used}")
        out.append(
            {
                "image": p["image"],
                "scale": float(scale),
                "adapter": adapter,
                "image_encoder": image_encoder or (_text(rec.get("image_encoder")) if not ip_adapter else None),
                # a new image: the recorded hash says nothing about it
                "image_hash": _text(rec.get("image_hash")) if text == rec.get("spec") else None,
            }
        )
    return out


def _text(value) -> str | None:
    """A recorded path or hash, where it is one (the metadata may hold anything)."""
    return value if isinstance(value, str) and value else None


def replay_prompts(records, source: str, ip_adapter=None, given=None) -> list[str]:
    """The --image-prompt values that replay the image prompts an image recorded (each record gets
    its value as "spec", so that its hash is checked): the picture or face-embedding file at its
    recorded path, else the file of that name beside the image; the adapter at its recorded path
    (unless `ip_adapter` replaces it). `given`: --image-prompt flags, which replace them."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise UsageError(f"the image prompts recorded in {source} must be a list, got {shown(repr(records))}")
    if given:
        return given
    specs = []
    for r in records:
        image = r.get("image")
        if not isinstance(image, str) or not image:
            name = f"{r.get('adapter_name')} [{r.get('a1111_hash') or '?'}]"
            several = " (several pictures in one prompt: --image-prompt takes one)" if isinstance(image, list) else ""
            raise UsageError(
                f"{source} used IP-Adapter {shown(name, 80)} but does not record its image prompt{several}; "
                "give --image-prompt IMG for each"
            )
        image = beside(image, source)
        if not os.path.exists(image):
            raise UsageError(
                f"the image prompt recorded in {source}, {shown(image, 200)}, is missing (nor is it beside the image); "
                "give --image-prompt IMG again"
            )
        adapter = r.get("adapter")
        if not ip_adapter and not (isinstance(adapter, str) and os.path.exists(adapter)):
            raise UsageError(
                f"the IP-Adapter recorded in {source}, {shown(str(adapter), 200)}, is missing; give --ip-adapter FILE"
            )
        scale = r.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise UsageError(f"the image prompt scale recorded in {source} must be a number, got {shown(repr(scale))}")
        r["spec"] = f"{image}:{scale}"
        specs.append(r["spec"])
    return specs
