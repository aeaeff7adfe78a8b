"""Head CT for teaching and testing the CT refusal: the ``head_ct`` collection, and CT with painted lesions.

A fresh bleed on CT is as bright as bone in a brain window; an infarct is darker than the brain around it. The
refusal must hold for both, so the CT it learns from gets them painted in (``painted_bleed``, ``painted_infarct``),
and other windows, crops and JPEG compression (``ct_variants``).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..images import head_mask

HEAD_CT_FOLDER = "head_ct"
HEAD_CT_FILE = re.compile(r"(?P<series>.+)-(?P<index>\d+)\.jpg$", re.IGNORECASE)


@dataclass
class HeadCt:
    series: str  # one per patient study
    label: str  # the folder: normal or stroke
    path: Path


def head_ct_slices(root: str | Path) -> list[HeadCt]:
    """Every slice of ``<root>`` (``normal/`` and ``stroke/``, files ``<series>-<n>.jpg``), series by series."""
    slices = []
    for folder in sorted(Path(root).iterdir()):
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                match = HEAD_CT_FILE.match(path.name)
                if match:
                    slices.append(HeadCt(f"{folder.name}/{match['series']}", folder.name, path))
    return slices


MASK_SIDE = 128  # masks are drawn at this size and stretched to the picture: erosions at 650 px are slow


def brain_region(grey: np.ndarray, depth_share: float = 1 / 12) -> np.ndarray:
    """The inside of the head, well within the skull, as a ``MASK_SIDE`` square mask: head pixels eroded by
    ``depth_share`` of the head's width."""
    from scipy.ndimage import binary_erosion, binary_fill_holes

    small = np.asarray(Image.fromarray(grey.astype(np.uint8)).resize((MASK_SIDE, MASK_SIDE), Image.BILINEAR))
    head = binary_fill_holes(head_mask(small))
    columns = np.flatnonzero(head.any(axis=0))
    depth = max(1, round((columns[-1] - columns[0]) * depth_share)) if len(columns) else 1
    return binary_erosion(head, iterations=int(depth))


def _blob(shape: tuple[int, int], region: np.ndarray, rng: np.random.Generator, share: tuple[float, float],
          inner: np.ndarray | None = None) -> np.ndarray | None:
    """A soft-edged mask (0-1) of ``shape`` of an ellipse inside ``region`` (a ``MASK_SIDE`` square mask); with
    ``inner`` (a deeper region), only its part outside ``inner``: a crescent hugging the region's edge."""
    inside = np.argwhere(region)
    if len(inside) < 20:
        return None
    y, x = np.mgrid[0:MASK_SIDE, 0:MASK_SIDE]
    side = np.sqrt(region.sum())
    cy, cx = inside[rng.integers(len(inside))]
    ry, rx = np.maximum(side * rng.uniform(*share, size=2), 1.0)
    angle = rng.uniform(0, np.pi)
    u = ((x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)) / rx
    v = (-(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)) / ry
    mask = ((u**2 + v**2) < 1) & region
    if inner is not None:
        mask &= ~inner
    if mask.sum() < 3:
        return None
    soft = Image.fromarray((mask * 255).astype(np.uint8)).resize(shape[::-1], Image.BILINEAR)
    return np.asarray(soft, dtype=np.float32) / 255


def painted_bleed(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """``image`` (a head CT) with one to three bright bleeds painted inside the skull, near bone-bright (grey 190 to
    255): round intracerebral ones, or a crescent along the skull's inside."""
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    region, inner = brain_region(grey), brain_region(grey, 1 / 8)
    for _ in range(int(rng.integers(1, 4))):
        mask = _blob(grey.shape, region, rng, (0.04, 0.18), inner if rng.random() < 0.3 else None)
        if mask is not None:
            level = rng.uniform(190, 255)
            texture = rng.normal(0, 6, grey.shape)
            grey = grey * (1 - mask) + np.clip(level + texture, 0, 255) * mask
    return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), mode="L")


def painted_infarct(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """``image`` (a head CT) with a dark infarct painted inside the skull: the brain there darkened to 40-75 %."""
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    mask = _blob(grey.shape, brain_region(grey), rng, (0.08, 0.25))
    if mask is not None:
        grey = grey * (1 - mask * rng.uniform(0.25, 0.6))
    return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), mode="L")


def rewindowed(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Another display window of the same CT, as a viewer's presets give: narrower (subdural), wider and flatter
    (bone), or shifted; a power curve for monitors' differences."""
    grey = np.asarray(image.convert("L"), dtype=np.float32) / 255
    kind = rng.integers(3)
    if kind == 0:  # narrower: more contrast in the brain, the skull saturates
        low, high = rng.uniform(0.05, 0.3), rng.uniform(0.6, 0.9)
    elif kind == 1:  # wider: a bone-like window, the brain flat and dark
        low, high = rng.uniform(-0.6, -0.1), rng.uniform(1.0, 1.6)
    else:
        shift = rng.uniform(-0.2, 0.2)
        low, high = shift, 1 + shift
    shown = np.clip((grey - low) / (high - low), 0, 1) ** rng.uniform(0.7, 1.4)
    return Image.fromarray((255 * shown).astype(np.uint8), mode="L")


def recompressed(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("L").save(buffer, format="JPEG", quality=int(rng.integers(30, 90)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("L")


def cropped(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    width, height = image.size
    w, h = int(width * rng.uniform(0.6, 0.95)), int(height * rng.uniform(0.6, 0.95))
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return image.convert("L").crop((left, top, left + w, top + h))


def ct_variants(image: Image.Image, rng: np.random.Generator, count: int, bleeds: bool = True) -> list[Image.Image]:
    """``count`` altered copies of a head CT: each with a painted bleed (unless not ``bleeds``) or infarct, or
    neither, then maybe another window, a crop and JPEG compression."""
    variants = []
    for _ in range(count):
        picture = image.convert("L")
        lesion = rng.random()
        if bleeds and lesion < 0.5:
            picture = painted_bleed(picture, rng)
        elif lesion < 0.75:
            picture = painted_infarct(picture, rng)
        if rng.random() < 0.5:
            picture = rewindowed(picture, rng)
        if rng.random() < 0.4:
            picture = cropped(picture, rng)
        if rng.random() < 0.5:
            picture = recompressed(picture, rng)
        variants.append(picture)
    return variants
