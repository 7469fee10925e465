"""The text chunks of a PNG (the parameters an image records), read without decoding its pixels.

A walk over the chunk headers that reads only the text chunks it is asked for: bounded in bytes
(each such text at most MAX_TEXT_CHUNK, compressed or not), in time (at most MAX_CHUNKS chunks,
the pixel data skipped with a seek) and refusing at once what is not a regular PNG file (a FIFO,
a device, a folder, a truncated or damaged file). Each refusal is one `UsageError` naming the file.
"""

from __future__ import annotations

import os
import struct
import zlib

from latentdiff.errors import UsageError
from latentdiff.runtime.reading import open_regular, size_text

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# One parameters text: a prompt and a negative prompt of at most 10,000 characters each (params.py)
# and a few hundred bytes of fields fit many times over; Pillow's own limit per text chunk is the same.
MAX_TEXT_CHUNK = 2**20
# A PNG's pixel data comes in chunks of 8-64 KiB: a million of them is a file of gigabytes.
MAX_CHUNKS = 1_000_000
_TEXT = (b"tEXt", b"zTXt", b"iTXt")


def png_text(path: str | os.PathLike, keys: tuple[str, ...], what: str) -> dict[str, str]:
    """{key: text} of the text chunks of PNG `path` whose keyword is one of `keys`."""
    fd = open_regular(path, what)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size

        def fail(reason: str):
            raise UsageError(f"{what} {path} cannot be read: {reason}")

        if f.read(len(SIGNATURE)) != SIGNATURE:
            fail("it is not a PNG file")
        found: dict[str, str] = {}
        for _ in range(MAX_CHUNKS):
            head = f.read(8)
            if len(head) < 8:
                fail("the file is truncated (it ends before the PNG's end marker)")
            length, kind = struct.unpack(">I4s", head)
            start = f.tell()
            if start + length + 4 > size:
                fail(f"the file is truncated (a {kind.decode('latin-1')!r} chunk runs past its end)")
            if kind == b"IEND":
                return found
            if kind in _TEXT:
                key = _keyword(f.read(min(length, 80)))
                if key in keys:
                    if length > MAX_TEXT_CHUNK:
                        fail(f"its {key!r} text is {size_text(length)}; at most {size_text(MAX_TEXT_CHUNK)} is read")
                    f.seek(start)
                    data = f.read(length)
                    if struct.unpack(">I", f.read(4))[0] != zlib.crc32(kind + data):
                        fail(f"its {key!r} text is damaged (CRC mismatch)")
                    found[key] = _decode(kind, data, len(key) + 1, fail)
            f.seek(start + length + 4)
        fail(f"it has more than {MAX_CHUNKS:,} chunks")


def _keyword(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("latin-1")


def _decode(kind: bytes, data: bytes, at: int, fail) -> str:
    """A text chunk's text (after its keyword, which ends at `at`)."""
    if kind == b"tEXt":
        return data[at:].decode("latin-1")
    if kind == b"zTXt":
        return _inflate(data[at + 1 :], fail).decode("latin-1")
    if len(data) < at + 2:
        fail("an iTXt chunk is too short")
    compressed = data[at] == 1
    rest = data[at + 2 :].split(b"\0", 2)  # language tag, translated keyword, text
    if len(rest) < 3:
        fail("an iTXt chunk is damaged")
    text = _inflate(rest[2], fail) if compressed else rest[2]
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as e:
        fail(f"its text is not UTF-8 (byte {e.start} is 0x{text[e.start]:02x})")


def _inflate(data: bytes, fail) -> bytes:
    """zlib data inflated to at most MAX_TEXT_CHUNK bytes (a few KB may inflate to gigabytes)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_TEXT_CHUNK + 1)
    except zlib.error as e:
        fail(f"a compressed text chunk is damaged ({e})")
    if len(out) > MAX_TEXT_CHUNK or inflater.unconsumed_tail:
        fail(f"a compressed text chunk inflates past {size_text(MAX_TEXT_CHUNK)}")
    return out
