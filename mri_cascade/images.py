"""Turning whatever a user hands us into the grey slices the models expect.

One loader for every input: PNG/JPEG/TIFF/WebP/BMP/GIF (8- or 16-bit, grey, RGB, RGBA, palette), DICOM and
NIfTI files (paths or bytes), PIL images and arrays. A DICOM multi-frame file or a NIfTI volume is a series.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .medical import (
    FROM_VOLUME_KEY,
    MAX_SLICES,
    NOT_BRAIN_MRI_KEY,
    ORIENTATION_HINT,
    DicomFrames,
    MedicalImageError,
    is_dicom,
    is_gzip,
    is_nifti,
    nifti_slices,
    read_dicom,
    value_window,
)

ACCEPTED = "PNG, JPEG, TIFF, WebP, BMP, GIF, DICOM or NIfTI"
ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray

MAX_PIXELS = 50_000_000
"""Larger images are refused rather than decoded (a guard against decompression bombs)."""
MAX_FILE_BYTES = 200 * 1024 * 1024
"""Larger files are refused before they are read."""
MIN_SIDE = 32
"""Slices narrower or shorter than this (in pixels) are refused: there is nothing to read in them."""


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


def _read_bytes(source: ImageSource) -> bytes:
    """The content of a path or bytes, refusing a missing, empty or oversize file before reading it."""
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise ImageLoadError(f"{_describe(source)} is not a file")
    size = len(source) if isinstance(source, (bytes, bytearray)) else Path(source).stat().st_size
    if size == 0:
        raise ImageLoadError(f"{_describe(source)} is empty (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise ImageLoadError(f"{_describe(source)} is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES >> 20} MB")
    return bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()


def _decode_picture(data: bytes, source: ImageSource) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise ImageLoadError(
                    f"{_describe(source)} is {image.width}x{image.height} pixels; the limit is {MAX_PIXELS:,}"
                )
            image.load()
        except ImageLoadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageLoadError(
                f"{_describe(source)} declares more pixels than the limit of {MAX_PIXELS:,} (a decompression bomb?)"
            ) from None
        except UnidentifiedImageError:
            raise ImageLoadError(f"{_describe(source)} is not a readable image; accepted: {ACCEPTED}") from None
        except (OSError, SyntaxError, ValueError, struct.error) as error:
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


def _decode(source: ImageSource) -> list[Image.Image] | DicomFrames:
    """The slices of ``source``, or for a DICOM file without a display window its frames still to be windowed."""
    if isinstance(source, Image.Image):
        return [source]
    if isinstance(source, np.ndarray):
        return [_from_array(source)]
    if not isinstance(source, (str, os.PathLike, bytes, bytearray)):
        raise ImageLoadError(f"cannot read an image from a {type(source).__name__}")
    data = _read_bytes(source)
    try:
        if is_dicom(data):
            return read_dicom(data)
        if is_nifti(data) or is_gzip(data):
            pictures = [Image.fromarray(s, mode="L") for s in nifti_slices(data)]
            for picture in pictures:
                picture.info[FROM_VOLUME_KEY] = True
            return pictures
    except MedicalImageError as error:
        raise ImageLoadError(f"{_describe(source)} {error}") from None
    return [_decode_picture(data, source)]


def _finish(source: ImageSource, decoded: list[Image.Image] | DicomFrames,
            window: tuple[float, float] | None) -> list[Image.Image]:
    """Decoded slices as the models take them (DICOM frames through ``window``), refusing any too small to read."""
    if isinstance(decoded, DicomFrames):
        pictures = [Image.fromarray(frame, mode="L") for frame in decoded.frames(window)]
        for picture in pictures if decoded.note else []:
            picture.info[NOT_BRAIN_MRI_KEY] = decoded.note
    else:
        pictures = decoded
    for picture in pictures:
        if min(picture.size) < MIN_SIDE:
            raise ImageLoadError(
                f"{_describe(source)} is {picture.width}x{picture.height} pixels; a slice must be at least "
                f"{MIN_SIDE}x{MIN_SIDE}" + (f". {ORIENTATION_HINT}" if picture.info.get(FROM_VOLUME_KEY) else "")
            )
    return [to_model_rgb(picture) for picture in pictures]


def read_sources(sources: Sequence[ImageSource], problems: list[str] | None = None) -> list[Image.Image]:
    """Every slice of ``sources``, one patient's, in order. DICOM frames without a display window share one window
    over all of them (``medical.value_window``), as a volume's slices do. With ``problems``, a source that cannot
    be read adds its message there and is left out; without, it raises ImageLoadError."""
    decoded = []
    for source in sources:
        try:
            decoded.append((source, _decode(source)))
        except ImageLoadError as error:
            if problems is None:
                raise
            problems.append(str(error))
    unwindowed = [item.values for _, item in decoded if isinstance(item, DicomFrames) and item.values is not None]
    window = value_window(unwindowed) if unwindowed else None
    slices = []
    for source, item in decoded:
        try:
            slices.extend(_finish(source, item, window))
        except ImageLoadError as error:
            if problems is None:
                raise
            problems.append(str(error))
    return slices


def load_series(source: ImageSource) -> list[Image.Image]:
    """Every slice in ``source`` as an RGB (grey-replicated) PIL image: one for a picture or a single-frame
    DICOM, several for a multi-frame DICOM or a NIfTI volume (empty slices skipped). A DICOM slice whose header
    says it is not a brain MRI carries that reason in ``info[NOT_BRAIN_MRI_KEY]``; a volume's slices carry
    ``info[FROM_VOLUME_KEY]``.

    Raises ImageLoadError with a message naming the input and the problem.
    """
    return read_sources([source])


def load_slices(sources: ImageSource | Sequence[ImageSource], max_slices: int = MAX_SLICES) -> list[Image.Image]:
    """Every slice of one patient's sources (pictures, DICOM files or series, NIfTI volumes), in order
    (``read_sources``)."""
    if isinstance(sources, np.ndarray) and sources.ndim == 3 and sources.shape[-1] not in (3, 4):
        sources = list(sources)  # a stack of greyscale slices along the first axis
    elif isinstance(sources, (str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray)):
        sources = [sources]
    slices = read_sources(sources)
    if not slices:
        raise ImageLoadError("the series holds no slice")
    if len(slices) > max_slices:
        raise ImageLoadError(f"the series holds {len(slices)} slices; at most {max_slices} are accepted")
    return slices


def load_image(source: ImageSource) -> Image.Image:
    """Read one slice (path, bytes, PIL image or array) into an RGB (grey-replicated) PIL image.

    A multi-slice source (DICOM series, NIfTI volume) is refused here: use ``load_series``.
    """
    series = load_series(source)
    if len(series) > 1:
        raise ImageLoadError(
            f"{_describe(source)} holds {len(series)} slices; classify it as a series (predict_series, /classify_series)"
        )
    return series[0]


HEAD_LEVEL = 0.1
"""Pixels brighter than this fraction of a slice's 99th-percentile intensity count as head rather than background."""
HEAD_LINE_SHARE = 0.02
"""A row or column is part of the head when at least this share of its pixels are; thinner marks (burnt-in
letters, rulers, noise) are left out of the box."""
HEAD_MARGIN = 0.04
"""Background kept around the head, as a share of the box's side."""


def head_level(grey: np.ndarray) -> float:
    """The grey level above which a pixel of a slice (an array) counts as head: ``HEAD_LEVEL`` of its 99th percentile."""
    return HEAD_LEVEL * float(np.percentile(grey, 99))


def head_mask(grey: np.ndarray) -> np.ndarray:
    return grey > head_level(grey)


def head_box(image: Image.Image) -> tuple[int, int, int, int] | None:
    """The square (left, top, right, bottom) box around the head in a slice, with a small margin; it may reach
    past the image's edges, where ``Image.crop`` pads with black. None when no head stands out from the
    background (a blank or uniformly bright image)."""
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    level = head_level(grey)
    head = grey > level
    if level <= 0 or head.all():
        return None
    rows = np.flatnonzero(head.mean(axis=1) >= HEAD_LINE_SHARE)
    columns = np.flatnonzero(head.mean(axis=0) >= HEAD_LINE_SHARE)
    if len(rows) < 2 or len(columns) < 2:
        return None
    centre_y, centre_x = (rows[0] + rows[-1] + 1) / 2, (columns[0] + columns[-1] + 1) / 2
    half = max(rows[-1] + 1 - rows[0], columns[-1] + 1 - columns[0]) * (1 + 2 * HEAD_MARGIN) / 2
    half = max(half, MIN_SIDE / 2)
    return (round(centre_x - half), round(centre_y - half), round(centre_x + half), round(centre_y + half))


def crop_to_head(image: Image.Image) -> Image.Image:
    """``image`` cropped to ``head_box``: every source's scans then frame the head alike, however much
    background their scanner or export left around it. Unchanged when no head stands out."""
    box = head_box(image)
    return image if box is None else image.crop(box)
