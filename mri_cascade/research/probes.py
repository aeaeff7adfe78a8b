"""Pictures that are not brain MRI slices, for measuring the cascade's refusal of unfamiliar input.

Everything is generated or taken from images shipped inside installed packages (matplotlib's and scikit-learn's
sample data; pydicom's and nibabel's test files for the real non-brain medical images), so the set is the same on
every machine and nothing is downloaded.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont


def _sample_files() -> dict[str, Path]:
    import matplotlib
    import sklearn.datasets

    matplotlib_data = Path(matplotlib.get_data_path()) / "sample_data"
    sklearn_images = Path(sklearn.datasets.__file__).parent / "images"
    return {
        "grace_hopper": matplotlib_data / "grace_hopper.jpg",
        "present": matplotlib_data / "Minduka_Present_Blue_Pack.png",
        "logo": matplotlib_data / "logo2.png",
        "china": sklearn_images / "china.jpg",
        "flower": sklearn_images / "flower.jpg",
    }


def _to_grey8(array: np.ndarray) -> Image.Image:
    array = np.asarray(array, dtype=np.float64)
    low, high = np.nanpercentile(array, [1, 99])
    return Image.fromarray((255 * np.clip((array - low) / max(high - low, 1e-9), 0, 1)).astype(np.uint8), mode="L")


def other_brain_mri() -> Image.Image:
    """matplotlib's sample MRI (``s1045.ima.gz``): a 256x256 16-bit sagittal head slice from another scanner.

    A brain MRI, so not part of the non-MRI set; reported on its own."""
    import matplotlib

    raw = gzip.decompress((Path(matplotlib.get_data_path()) / "sample_data" / "s1045.ima.gz").read_bytes())
    return _to_grey8(np.frombuffer(raw, np.uint16).reshape(256, 256))


def _photos(rng: np.random.Generator) -> Iterator[Image.Image]:
    for path in _sample_files().values():
        photo = Image.open(path).convert("RGB")
        for variant in range(10):
            image = photo
            if variant % 5:  # random crops of a third to all of each side
                width, height = photo.size
                w, h = int(width * rng.uniform(0.33, 1)), int(height * rng.uniform(0.33, 1))
                left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
                image = photo.crop((left, top, left + w, top + h))
            if variant % 2:  # greyscale versions are the hard case: every scan is grey
                image = image.convert("L")
            yield image.rotate(90 * int(rng.integers(0, 4)), expand=True)


def _terrain() -> Iterator[Image.Image]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "sample_data"
    with np.load(folder / "topobathy.npz") as data:
        yield _to_grey8(data["topo"] if "topo" in data else data[data.files[0]])
    with np.load(folder / "jacksboro_fault_dem.npz") as data:
        yield _to_grey8(data["elevation"])


def _charts(rng: np.random.Generator, count: int) -> Iterator[Image.Image]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = ["line", "bar", "scatter", "pie", "hist", "heatmap"]
    for index in range(count):
        kind = kinds[index % len(kinds)]
        figure, axes = plt.subplots(figsize=(rng.uniform(3, 6), rng.uniform(3, 5)), dpi=60)
        if kind == "line":
            axes.plot(np.cumsum(rng.normal(size=(50, 3)), axis=0))
        elif kind == "bar":
            axes.bar(range(6), rng.uniform(1, 10, 6))
        elif kind == "scatter":
            axes.scatter(*rng.normal(size=(2, 200)), s=8)
        elif kind == "pie":
            axes.pie(rng.uniform(1, 5, 5))
        elif kind == "hist":
            axes.hist(rng.normal(size=500), bins=30)
        else:
            axes.imshow(rng.normal(size=(12, 12)), cmap=["viridis", "gray", "magma"][index % 3])
        axes.set_title(f"Figure {index}")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        plt.close(figure)
        image = Image.open(buffer)
        image.load()
        yield image.convert("L") if index % 4 == 3 else image.convert("RGB")


def _documents(rng: np.random.Generator, count: int) -> Iterator[Image.Image]:
    words = ("patient report scan brain image results normal findings page table total date name value "
             "the of and to in is for with on as by").split()
    font = ImageFont.load_default(size=14)
    for index in range(count):
        width, height = int(rng.integers(300, 600)), int(rng.integers(300, 700))
        page = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(page)
        for line in range(0, height - 30, 20):
            if rng.random() < 0.85:
                text = " ".join(rng.choice(words, size=int(rng.integers(3, 12))))
                draw.text((20, 15 + line), text, fill=0, font=font)
        if index % 3 == 1:  # a table
            for x in range(20, width - 20, 80):
                draw.line((x, 10, x, height - 10), fill=0)
        yield Image.eval(page, lambda v: 255 - v) if index % 4 == 3 else page  # some white on black


def _noise(rng: np.random.Generator, count: int) -> Iterator[Image.Image]:
    for index in range(count):
        height, width = int(rng.integers(64, 400)), int(rng.integers(64, 400))
        kind = index % 5
        if kind == 0:
            array = rng.uniform(0, 255, (height, width))
        elif kind == 1:
            array = rng.normal(128, 40, (height, width))
        elif kind == 2:
            array = 255.0 * (rng.random((height, width)) < rng.uniform(0.05, 0.5))
        elif kind == 3:
            array = rng.uniform(0, 255, (height, width, 3))
        else:  # smooth, blotchy noise: the closest noise gets to tissue texture
            smooth = Image.fromarray(rng.uniform(0, 255, (height, width)).astype(np.uint8))
            array = np.asarray(smooth.filter(ImageFilter.GaussianBlur(rng.uniform(2, 8))), dtype=np.float64)
            array = 255 * (array - array.min()) / max(np.ptp(array), 1e-9)
        yield Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _blank(rng: np.random.Generator, count: int) -> Iterator[Image.Image]:
    for index in range(count):
        size = (int(rng.integers(64, 400)), int(rng.integers(64, 400)))
        if index % 2:
            yield Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
        else:
            yield Image.new("L", size, [0, 255, 128, int(rng.integers(0, 256))][index // 2 % 4])


def _shapes(rng: np.random.Generator, count: int) -> Iterator[Image.Image]:
    for index in range(count):
        size = int(rng.integers(96, 300))
        y, x = np.mgrid[0:size, 0:size] / size
        kind = index % 4
        if kind == 0:
            array = 255 * x
        elif kind == 1:
            array = 255.0 * ((np.floor(x * 8) + np.floor(y * 8)) % 2)
        elif kind == 2:  # a bright disc on black
            array = 255.0 * (((x - 0.5) ** 2 + (y - 0.5) ** 2) < rng.uniform(0.05, 0.2))
        else:
            array = 127.5 * (1 + np.sin(2 * np.pi * rng.uniform(2, 12) * (x + y)))
        yield Image.fromarray(array.astype(np.uint8), mode="L")


def non_mri_images(seed: int = 0, scale: int = 1) -> list[tuple[str, Image.Image]]:
    """(category, image) pairs: photos (colour and grey, crops), terrain maps, charts, documents, noise, blank
    frames and geometric shapes. ``scale`` multiplies the generated categories' counts."""
    rng = np.random.default_rng(seed)
    generated = {
        "photo": list(_photos(rng)),
        "terrain map": list(_terrain()),
        "chart": list(_charts(rng, 36 * scale)),
        "document": list(_documents(rng, 24 * scale)),
        "noise": list(_noise(rng, 40 * scale)),
        "blank": list(_blank(rng, 16 * scale)),
        "shape": list(_shapes(rng, 24 * scale)),
    }
    return [(category, image) for category, images in generated.items() for image in images]


# Real medical images that are not brain MRI, shipped as test data inside pydicom and nibabel: source -> (files
# holding the same picture in different encodings, what it shows). Split by source, never by crop.
NON_BRAIN_SOURCES: dict[str, tuple[tuple[str, ...], str]] = {
    "abdomen_mr": (("examples_overlay.dcm",), "MR of the abdomen (liver), axial"),
    "thorax_ct": (("CT_small.dcm",), "CT of the thorax (vertebra), axial"),
    "head_ct_soft": (("693_J2KI.dcm",), "CT of the head, axial, soft-tissue window"),
    "head_ct_bone": (("J2K_pixelrep_mismatch.dcm",), "CT of the skull base, axial, bone window"),
    "bone_scan": (("JPEG2000.dcm",), "nuclear-medicine whole-body bone scan"),  # its 12-bit JPEG twins do not decode
    "lymph_node_us": (("examples_rgb_color.dcm", "examples_jpeg2k.dcm"), "ultrasound of a lymph node, with overlays"),
    "palette_us": (("examples_palette.dcm",), "ultrasound, palette colour"),
    "echo_us": (("examples_ybr_color.dcm",), "echocardiogram (ultrasound cine), 30 frames"),
    "liver_seg": (("liver_1frame.dcm",), "segmentation mask of a liver (DICOM SEG)"),
    "phantom_mr": (("phantom_EPI_asc_CLEAR_2_1.PAR",), "MR (EPI) of a cylindrical phantom, Philips PAR/REC (nibabel)"),
}
# The abdominal MR is the one real MR of another body part to be had offline: it is in the development part so
# that the check learns what such a scan looks like; the held-out part's MR is the phantom.
NON_BRAIN_PARTS = {
    "development": ("abdomen_mr", "thorax_ct", "head_ct_bone", "lymph_node_us", "echo_us", "liver_seg"),
    "held_out": ("head_ct_soft", "bone_scan", "palette_us", "phantom_mr"),
}


def non_brain_source_files(source: str) -> list[Path]:
    """The test files of one non-brain source, bundled with pydicom or nibabel (nothing is downloaded)."""
    import nibabel
    import pydicom

    folders = [Path(pydicom.__file__).parent / "data" / "test_files", Path(nibabel.__file__).parent / "tests" / "data"]
    return [next(folder / name for folder in folders if (folder / name).is_file()) for name in NON_BRAIN_SOURCES[source][0]]


def _frames(path: Path) -> list[Image.Image]:
    """A DICOM file through the project's own loader; a PAR/REC volume as the middle slice of each of its volumes."""
    from ..images import load_series

    if path.suffix != ".PAR":
        return load_series(path)
    import nibabel

    volume = np.asanyarray(nibabel.load(path).dataobj, dtype=np.float64)
    return [_to_grey8(volume[:, :, volume.shape[2] // 2, index].T) for index in range(volume.shape[3])]


def picture_variants(image: Image.Image, rng: np.random.Generator, count: int) -> Iterator[tuple[str, Image.Image]]:
    """The picture as loaded, then crops, flips, rotations, new sizes and intensity windows of it."""
    yield "as loaded", image
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    for index in range(count - 1):
        kind = index % 5
        if kind == 0:  # a crop of half to nine tenths of each side
            height, width = grey.shape
            h, w = int(height * rng.uniform(0.5, 0.9)), int(width * rng.uniform(0.5, 0.9))
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            yield "crop", Image.fromarray(grey[top : top + h, left : left + w].astype(np.uint8))
        elif kind == 1:
            yield "flip", Image.fromarray(grey[:, ::-1].astype(np.uint8))
        elif kind == 2:
            yield "rotation", Image.fromarray(np.rot90(grey, int(rng.integers(1, 4))).astype(np.uint8))
        elif kind == 3:  # resized to the Alzheimer slices' size or the tumor scans' usual one
            size = (176, 208) if rng.random() < 0.5 else (512, 512)
            yield "resize", Image.fromarray(grey.astype(np.uint8)).resize(size, Image.BICUBIC)
        else:  # another intensity window: narrower or wider, shifted
            low, high = np.percentile(grey, [rng.uniform(0, 30), rng.uniform(70, 100)])
            yield "window", _to_grey8(np.clip(grey, low, high))


def non_brain_medical_images(part: str, variants: int = 25, seed: int = 0) -> list[tuple[str, str, Image.Image]]:
    """(source, variant, image) for the real non-brain medical images of ``part`` ("development" or "held_out"):
    each DICOM file read by the project's own loader (windowing included; three frames of a cine), the phantom's
    PAR/REC by nibabel, then ``variants`` pictures per frame: as loaded, crops, flips, rotations, resizes and windows."""
    rng = np.random.default_rng(seed)
    images = []
    for source in NON_BRAIN_PARTS[part]:
        for path in non_brain_source_files(source):
            frames = _frames(path)
            for frame in frames:  # the pixels alone are measured: what a PNG of the same scan would give
                frame.info.clear()
            for frame in frames[:: max(1, len(frames) // 3)][:3]:
                images.extend((source, variant, image) for variant, image in picture_variants(frame, rng, variants))
    return images
