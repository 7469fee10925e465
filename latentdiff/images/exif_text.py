"""The parameters text AUTOMATIC1111 keeps in a JPEG's or WebP's EXIF: the Exif IFD's UserComment
(tag 0x9286), an 8-byte character-code prefix and the text. A1111 writes it with piexif as
`UNICODE\\0` + UTF-16 big-endian in a big-endian ("MM") TIFF block: a JPEG's APP1 segment
("Exif\\0\\0" + TIFF) or a WebP's EXIF chunk (the TIFF block alone). Read with Pillow's EXIF
support, bounded: the file is at most MAX_FILE, its EXIF block at most MAX_EXIF, and each refusal
is one `UsageError` naming the file.
"""

from __future__ import annotations

import os
import warnings

from latentdiff.errors import UsageError
from latentdiff.images.png_text import MAX_TEXT_CHUNK
from latentdiff.runtime.reading import open_regular, size_text

# Pillow reads a whole WebP file to open it; a generated picture is a few MiB.
MAX_FILE = 256 * 2**20
# A text of MAX_TEXT_CHUNK bytes as UTF-16 (two bytes a character), its prefix and the TIFF around it.
MAX_EXIF = 2 * MAX_TEXT_CHUNK + 4096
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286
# The character codes of the Exif standard (its Table 9), by their 8-byte prefix.
_CODES = {b"ASCII\0\0\0": "ascii", b"JIS\0\0\0\0\0": "shift_jis", b"UNICODE\0": "utf-16", b"\0" * 8: "utf-8"}


def kind_of(head: bytes) -> str | None:
    """ "png", "jpeg" or "webp" from a file's first 12 bytes; None for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def exif_comment(path: str | os.PathLike, what: str) -> str | None:
    """The EXIF UserComment of JPEG or WebP file `path` as text; None when it has none."""

    def fail(reason: str):
        raise UsageError(f"{what} {path} cannot be read: {reason}")

    raw = _exif_block(path, fail)
    if raw is None:
        return None
    if len(raw) > MAX_EXIF:
        fail(f"its EXIF is {size_text(len(raw))}; at most {size_text(MAX_EXIF)} is read")
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow only warns of "Corrupt EXIF data" and reads on
            exif = Image.Exif()
            exif.load(raw)
            comment = exif.get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception as e:  # noqa: BLE001 - Pillow reports a damaged TIFF block in many ways
        fail(f"its EXIF is damaged ({type(e).__name__}: {str(e)[:80]})")
    if comment is None or isinstance(comment, str):
        return comment or None
    if not isinstance(comment, bytes):
        fail(f"its EXIF UserComment is not text (a {type(comment).__name__})")
    return _decode(comment, raw, fail) or None


def _exif_block(path, fail) -> bytes | None:
    """The file's EXIF block (TIFF), read by Pillow without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    fd = open_regular(path, "--from image")
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        if size > MAX_FILE:
            fail(f"it is {size_text(size)}; at most {size_text(MAX_FILE)} is read")
        try:  # Pillow reads a JPEG's resolution from its EXIF on opening, warning if it is damaged: said below
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(f) as im:
                    raw = im.info.get("exif")
        except Image.DecompressionBombError:  # a header declaring gigapixels, refused by Pillow on opening
            fail(f"its header declares a picture of more than {Image.MAX_IMAGE_PIXELS} pixels (damaged?)")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
            fail(f"it is damaged ({type(e).__name__}: {str(e)[:80]})")
    if raw is not None and not isinstance(raw, bytes):
        fail("its EXIF is not a block of bytes")
    return raw


def _decode(comment: bytes, raw: bytes, fail) -> str:
    """A UserComment's text by its prefix. UNICODE is UTF-16 in the TIFF block's byte order (piexif,
    and so A1111, write big-endian in a big-endian block); a byte-order mark overrides it."""
    code = _CODES.get(comment[:8])
    if code is None:
        fail(f"its EXIF UserComment has an unknown character code {comment[:8]!r}")
    body = comment[8:]
    if code == "utf-16":
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            code, body = ("utf-16-be" if body[:2] == b"\xfe\xff" else "utf-16-le"), body[2:]
        else:
            tiff = raw[6:] if raw.startswith(b"Exif\0\0") else raw
            code = "utf-16-le" if tiff[:2] == b"II" else "utf-16-be"
    try:
        return body.decode(code).rstrip("\0")
    except UnicodeDecodeError as e:
        fail(f"its EXIF UserComment is not valid {code.upper()} (at byte {e.start + 8})")
