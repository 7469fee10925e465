"""Files as AUTOMATIC1111 1.10 writes them, built here byte by byte (piexif is no dependency):
a JPEG or WebP whose parameters are in the EXIF UserComment, laid out as piexif 1.1.3 lays it out
(`piexif.dump({"Exif": {UserComment: UserComment.dump(text, encoding="unicode")}})` then
`piexif.insert`), and A1111's own parse rules (modules/infotext_utils.py parse_generation_parameters)
as a small oracle of what A1111 reads from a line."""

from __future__ import annotations

import io
import json
import re
import struct

from PIL import Image


def user_comment(text: str) -> bytes:
    """piexif.helper.UserComment.dump(text, encoding="unicode"): the UNICODE prefix, UTF-16 big-endian."""
    return b"UNICODE\0" + text.encode("utf-16-be")


def exif_block(comment: bytes) -> bytes:
    """piexif.dump of an Exif IFD holding only UserComment: "Exif\\0\\0", a big-endian TIFF header,
    IFD0 with one entry (the Exif IFD pointer), the Exif IFD with one entry and (as piexif writes
    it) no next-IFD offset, then the comment's bytes."""
    ifd0 = struct.pack(">H", 1) + struct.pack(">HHII", 0x8769, 4, 1, 8 + 18) + b"\0\0\0\0"
    exif_ifd = struct.pack(">H", 1) + struct.pack(">HHII", 0x9286, 7, len(comment), 8 + 18 + 14)
    return b"Exif\0\0" + b"MM\0\x2a\0\0\0\x08" + ifd0 + exif_ifd + comment


def _image(fmt: str, size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 40, 200)).save(buf, format=fmt)
    return buf.getvalue()


def jpeg_with(exif: bytes, size=(32, 32)) -> bytes:
    """piexif.insert into Pillow's JPEG: the Exif APP1 segment takes the JFIF APP0's place."""
    data = _image("JPEG", size)
    assert data[2:4] == b"\xff\xe0"
    app0_end = 4 + struct.unpack(">H", data[4:6])[0]
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + data[app0_end:]


def webp_with(exif: bytes, size=(32, 32)) -> bytes:
    """piexif.insert into Pillow's lossy WebP: a VP8X chunk (the EXIF flag, the canvas size), the
    VP8 chunk, and an EXIF chunk holding the TIFF block without its "Exif\\0\\0"."""
    data = _image("WEBP", size)
    chunks = [data[12:]]
    tiff = exif[6:]
    chunks.append(b"EXIF" + struct.pack("<I", len(tiff)) + tiff + b"\0" * (len(tiff) % 2))
    w, h = size
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x08, 0, 0, 0]) + struct.pack("<I", w - 1)[:3]
    vp8x += struct.pack("<I", h - 1)[:3]
    body = b"WEBP" + vp8x + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_SIZE = re.compile(r"^(\d+)x(\d+)$")


def a1111_reads(text: str) -> dict:
    """What A1111 1.10's parse_generation_parameters makes of a line (its documented rules, without
    styles and the settings it fills from its own options)."""
    res, prompt, negative, in_negative = {}, [], [], False
    *lines, last = text.strip().split("\n")
    if len(RE_PARAM.findall(last)) < 3:
        lines, last = [*lines, last], ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[16:].strip()
        (negative if in_negative else prompt).append(line)
    res["Prompt"], res["Negative prompt"] = "\n".join(prompt), "\n".join(negative)
    for k, v in RE_PARAM.findall(last):
        if v[:1] == '"' and v[-1:] == '"':
            try:
                v = json.loads(v)
            except ValueError:
                pass
        m = RE_SIZE.match(v)
        if m:
            res[f"{k}-1"], res[f"{k}-2"] = m.group(1), m.group(2)
        else:
            res[k] = v
    res.setdefault("Clip skip", "1")
    res.setdefault("Schedule type", "Automatic")
    return res


EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")  # A1111's modules/extra_networks.py re_extra_net


def a1111_networks(prompt: str) -> tuple[str, list[tuple[str, list[str]]]]:
    """A1111's extra_networks.parse_prompt: the prompt without its tags, and each tag's kind and args."""
    found = [(m.group(1), m.group(2).split(":")) for m in EXTRA_NETWORK.finditer(prompt)]
    return EXTRA_NETWORK.sub("", prompt), found
