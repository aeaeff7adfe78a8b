"""Turning whatever a user hands us into the image the models expect."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray

MAX_PIXELS = 50_000_000
"""Larger images are refused rather than decoded (a guard against decompression bombs)."""


class ImageLoadError(ValueError):
    """The input could not be read as an image; the message says why and names the input."""


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"'{Path(source).name}'"
    return f"the {type(source).__name__} input"


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = np.asarray(Image.fromarray(array[..., :3].astype(np.uint8)).convert("L")) if array.dtype == np.uint8 \
            else array[..., :3].mean(axis=-1)
    if array.ndim != 2:
        raise ImageLoadError(f"expected a 2-D greyscale or HxWx3 array, got shape {array.shape}")
    if array.dtype == np.uint8:
        return Image.fromarray(np.ascontiguousarray(array), mode="L")
    array = np.asarray(array, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ImageLoadError("the array contains NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    array = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    return Image.fromarray(np.round(array).astype(np.uint8), mode="L")


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageLoadError("the input is empty (0 bytes)")
        stream = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageLoadError(f"{_describe(source)} is not a file")
        if path.stat().st_size == 0:
            raise ImageLoadError(f"{_describe(source)} is empty (0 bytes)")
        stream = path.open("rb")
    else:
        raise ImageLoadError(f"cannot read an image from a {type(source).__name__}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(stream)
            if image.width * image.height > MAX_PIXELS:
                raise ImageLoadError(
                    f"{_describe(source)} is {image.width}x{image.height} pixels; the limit is {MAX_PIXELS:,}"
                )
            image.load()
        except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageLoadError(f"{_describe(source)} is not a readable image (PNG, JPEG, ...): {error}") from None
        except (OSError, SyntaxError, ValueError) as error:
            if isinstance(error, ImageLoadError):
                raise
            raise ImageLoadError(f"{_describe(source)} is damaged or truncated: {error}") from None
    return image


def to_model_rgb(image: Image.Image) -> Image.Image:
    """MRI slices are greyscale: drop any colour cast, then replicate to the three channels the models take."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _from_array(np.asarray(image)).convert("RGB")
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("L").convert("RGB")


def load_image(source: ImageSource) -> Image.Image:
    """Read a path, bytes, PIL image or array into an RGB (grey-replicated) PIL image.

    Raises ImageLoadError with a message naming the input and the problem.
    """
    image = _open(source)
    if min(image.size) < 1:
        raise ImageLoadError(f"{_describe(source)} has no pixels")
    return to_model_rgb(image)
