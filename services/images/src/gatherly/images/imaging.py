"""Checking and re-encoding uploaded pictures with Pillow: CPU only, no I/O; run in a worker thread.

Nothing of the upload survives but its pixels: the format is checked by its magic bytes against the declared type,
the pixel count is bounded before anything is decoded, animations and data hiding after the image's end
(polyglots) are refused, EXIF orientation is applied and then every piece of metadata (EXIF with GPS, XMP, ICC,
comments) is left behind by re-encoding the pixels into fresh WebP files."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from gatherly.images.domain import ACCEPTED_TYPES, VARIANT_SIDES, Rejection, Variant

# Pillow's own guard, set explicitly rather than trusting its default: Image.open refuses (DecompressionBombError)
# anything over twice this, and the warning it gives between one and two times is made an error below. 40 MP takes
# any phone or most camera photos (24 MP is 6000 x 4000) and bounds a decoded RGBA image to 160 MB.
MAX_PIXELS = 40_000_000
# WebP cannot hold a side longer than 16383 px; a longer side is a hostile or broken file here anyway.
MAX_SIDE = 16_383
WEBP_QUALITY = 82

# Markers of a file that is also something a browser or a server would run. A re-encoded variant cannot carry
# them, but an upload that contains them was made to be two things at once: it is refused, not cleaned.
ACTIVE_CONTENT = (b"<script", b"<html", b"<?php", b"<svg", b"<!doctype")

Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Between MAX_PIXELS and twice that Pillow only warns; a warning nobody reads is no guard. This filter is
# process-wide on purpose: no decode anywhere in the process may pass a bomb with a warning.
warnings.simplefilter("error", Image.DecompressionBombWarning)


@dataclass(frozen=True)
class Processed:
    width: int  # after EXIF orientation
    height: int
    variants: dict[Variant, bytes]  # WebP files


def sniff(data: bytes) -> str | None:
    """The format the file's first bytes announce (a Pillow format name), or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _ends_where_it_should(data: bytes, kind: str) -> bool:
    """False when bytes follow the image's own end marker: another file glued on (a polyglot)."""
    if kind == "JPEG":
        return data.endswith(b"\xff\xd9")
    if kind == "PNG":
        return data.endswith(b"IEND\xaeB`\x82")
    if kind == "GIF":
        return data.endswith(b";")
    # WebP: the RIFF header states the length of what follows it.
    return int.from_bytes(data[4:8], "little") + 8 == len(data)


def check(data: bytes, declared_type: str) -> str:
    """The file's format, once its bytes are what the slot said; raises Rejection otherwise (no decoding)."""
    if not data:
        raise Rejection("the file is empty")
    kind = sniff(data)
    expected = ACCEPTED_TYPES[declared_type]
    if kind is None:
        raise Rejection(f"the file is not a JPEG, PNG, WebP or GIF image (declared {declared_type})")
    if kind != expected:
        raise Rejection(f"the file is a {kind} image, but {declared_type} was declared")
    if not _ends_where_it_should(data, kind):
        raise Rejection(f"the file does not end where a {kind} image ends: it is cut short, or other data follows")
    lowered = data.lower()
    if any(marker in lowered for marker in ACTIVE_CONTENT):
        raise Rejection("the file carries markup or script inside the image (a polyglot)")
    return kind


def process(data: bytes, declared_type: str) -> Processed:
    """Check, decode within bounds, orient, and re-encode into every variant. Raises Rejection with the reason."""
    kind = check(data, declared_type)
    try:
        with Image.open(io.BytesIO(data), formats=[kind]) as image:
            width, height = image.size
            if width > MAX_SIDE or height > MAX_SIDE:
                raise Rejection(f"the image is {width} x {height} pixels; no side may exceed {MAX_SIDE}")
            if width * height > MAX_PIXELS:  # Pillow warns (made an error above) but state it plainly
                raise Rejection(f"the image has {width * height} pixels; at most {MAX_PIXELS} are accepted")
            if getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) > 1:
                raise Rejection("animated images are not accepted")
            if kind == "JPEG":
                # Decode at a reduced DCT scale when the largest variant needs fewer pixels: a 24 MP photo is then
                # decoded at half size (a quarter of the memory and time).
                image.draft("RGB", (VARIANT_SIDES[Variant.LARGE], VARIANT_SIDES[Variant.LARGE]))
            image.load()
            # Orientations 5 to 8 turn the picture a quarter: its upright width is the stored height.
            turned = image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
            # In place: a transposed copy would double the memory of a large image.
            ImageOps.exif_transpose(image, in_place=True)
            return _variants(image, *((height, width) if turned else (width, height)))
    except Rejection:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as bomb:
        raise Rejection(f"the image would decode to too many pixels (a decompression bomb): {bomb}") from bomb
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError) as broken:
        # Pillow reports a truncated or corrupt file with any of these, depending on the format and where it breaks.
        raise Rejection(f"the file is truncated or corrupt: {broken}") from broken


def _variants(image: Image.Image, width: int, height: int) -> Processed:
    mode = "RGBA" if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info else "RGB"
    pixels = image if image.mode == mode else image.convert(mode)
    variants: dict[Variant, bytes] = {}
    for variant, side in VARIANT_SIDES.items():
        if variant is Variant.THUMB:
            square = min(side, *pixels.size)
            copy = ImageOps.fit(pixels, (square, square), Image.Resampling.LANCZOS)
        else:
            copy = pixels.resize(_within(pixels.size, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
        # Only the pixels travel on: Pillow copies `info` (EXIF with GPS, XMP, ICC, comments) to derived images,
        # and an encoder may write what it finds there.
        copy.info.clear()
        out = io.BytesIO()
        copy.save(out, format="WEBP", quality=WEBP_QUALITY, method=4, exif=b"", xmp=b"", icc_profile=b"")
        variants[variant] = out.getvalue()
    return Processed(width=width, height=height, variants=variants)


def _within(size: tuple[int, int], side: int) -> tuple[int, int]:
    """`size` scaled to fit a square of `side`, keeping the aspect ratio; never enlarged."""
    width, height = size
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))
