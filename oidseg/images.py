"""Images as people have them (the ``predict`` target): any JPEG or PNG,
read upright as 8-bit BGR.

- EXIF orientation (tag 0x0112, JPEG and PNG ``eXIf``) is applied, so a
  phone photo comes out as it is displayed and its masks fit that image;
  sizes are the upright sizes.
- Pixel formats: 8-bit RGB and grayscale (also palette and 16-bit PNGs,
  converted to 8 bits by OpenCV) are decoded by OpenCV exactly as the test
  shards' images are (``cv2.IMREAD_COLOR``, so an ordinary JPEG gives the
  same pixels as the Kaggle path); CMYK JPEGs are converted to RGB by Pillow;
  images with transparency (RGBA, LA, palette or grayscale with a
  transparent colour) are composited over white by Pillow.
- Anything else (not a JPEG/PNG, a broken header or PNG, more than
  :data:`MAX_PIXELS`) raises :class:`InputError` naming the file. A JPEG cut
  short decodes with its missing part grey, as OpenCV (and the test shards'
  reader) and web browsers show it.

The Open Images test shards do NOT come here: their annotation sizes are the
stored-pixel sizes, so ``oidseg.infer`` reads them without EXIF rotation.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from oidseg.errors import InputError

#: file name suffixes taken as images (lower case); other files are listed
#: and skipped by ``predict``
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png")
#: formats Pillow may report for them (MPO: a camera JPEG with a preview)
FORMATS = ("JPEG", "MPO", "PNG")
#: the largest image read (pixels), OpenCV's own default limit
MAX_PIXELS = 1 << 30
#: EXIF orientation tag
ORIENTATION_TAG = 0x0112

#: modes OpenCV decodes as Pillow displays them (8-bit colour or grey, 1-bit,
#: palette and 16-bit grey: converted to 8-bit BGR)
_OPENCV_MODES = {"RGB", "L", "1", "P", "I;16", "I;16B", "I;16L", "I"}


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels as stored -> as displayed, for an EXIF orientation 1..8 (any
    other value: unchanged); the result is C-contiguous."""
    ops = {
        2: lambda a: a[:, ::-1],  # mirrored horizontally
        3: lambda a: a[::-1, ::-1],  # rotated 180
        4: lambda a: a[::-1],  # mirrored vertically
        5: lambda a: a.swapaxes(0, 1),  # transposed
        6: lambda a: a.swapaxes(0, 1)[:, ::-1],  # rotated 90 clockwise to display
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transversed
        8: lambda a: a.swapaxes(0, 1)[::-1],  # rotated 90 counter-clockwise to display
    }
    op = ops.get(int(orientation))
    return np.ascontiguousarray(op(img) if op else img)


def upright_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) as displayed."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _orientation(pil) -> int:
    try:
        value = int(pil.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block: the image is still an image
        return 1
    return value if 1 <= value <= 8 else 1


def _composite_over_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 RGBA -> uint8 RGB over a white background (rounded)."""
    alpha = rgba[..., 3:4].astype(np.uint32)
    rgb = rgba[..., :3].astype(np.uint32)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def read_upright(path: str | Path, image_id: str | None = None) -> np.ndarray:
    """The image at ``path`` as displayed: BGR uint8 (H, W, 3), C-contiguous
    (see the module docstring); :class:`InputError` naming ``path`` (and
    ``image_id``) when it is missing, not a JPEG/PNG, truncated or too large."""
    import cv2
    from PIL import Image

    where = f"{path} / {image_id}" if image_id else f"{path}"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{where}: image is missing or unreadable ({exc.strerror or exc})") from None
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own limit is 89 M pixels; ours is OpenCV's
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            pil = Image.open(io.BytesIO(data))
            fmt, mode, (width, height) = pil.format, pil.mode, pil.size
    except Image.DecompressionBombError:
        raise InputError(f"{where}: image is too large (more than {MAX_PIXELS} pixels)") from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{where}: not a JPEG or PNG image (unknown file content)") from None
    except Exception as exc:  # broken headers
        raise InputError(f"{where}: not a readable JPEG or PNG image ({exc})") from None
    if fmt not in FORMATS:
        raise InputError(f"{where}: a {fmt} image, not JPEG or PNG")
    if width * height > MAX_PIXELS:
        raise InputError(f"{where}: image is too large ({width}x{height} pixels; at most {MAX_PIXELS})")
    orientation = _orientation(pil)
    transparent = "A" in mode or "a" in mode or "transparency" in pil.info
    try:
        if mode in _OPENCV_MODES and not transparent:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            if img is None:
                raise ValueError("OpenCV cannot decode it")
            if img.shape[:2] != (height, width):
                raise ValueError(f"decoded as {img.shape[1]}x{img.shape[0]}, header says {width}x{height}")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "palette images with transparency ..."
                pil.load()
                if transparent:
                    rgb = _composite_over_white(np.asarray(pil.convert("RGBA")))
                else:  # CMYK (Pillow undoes Adobe's inversion), YCbCr, LAB, F, ...
                    rgb = np.asarray(pil.convert("RGB"))
            img = np.ascontiguousarray(rgb[..., ::-1])
    except InputError:
        raise
    except Exception as exc:  # truncated data, broken chunks
        raise InputError(f"{where}: image data is broken ({exc})") from None
    return apply_orientation(img, orientation)
