"""Shared fixtures: synthetic brain-like slices and tiny random models in Hub layout."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def synthetic_slice(seed: int = 0, size: tuple[int, int] = (176, 208), lesion: bool = False) -> Image.Image:
    """A greyscale 'axial slice': a bright ellipse (skull and brain) with darker ventricles and noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    cx, cy = width / 2 + rng.uniform(-5, 5), height / 2 + rng.uniform(-5, 5)
    brain = ((x - cx) / (0.4 * width)) ** 2 + ((y - cy) / (0.45 * height)) ** 2 < 1
    ventricles = ((x - cx) / (0.08 * width)) ** 2 + ((y - cy) / (0.15 * height)) ** 2 < 1
    pixels = np.where(brain, 120 + 40 * rng.random((height, width)), 0) - np.where(ventricles, 80, 0)
    if lesion:
        lx, ly = cx + rng.uniform(-20, 20), cy + rng.uniform(-30, 30)
        pixels += 100 * (((x - lx) ** 2 + (y - ly) ** 2) < 12**2)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def save_tiny_models(root: Path, healthy_threshold: float | None = None, seed: int = 0,
                     operating_points: dict | None = None, series_operating_points: dict | None = None) -> Path:
    """Four randomly initialised, very small classifiers in the cascade's Hub layout. The disease detector's config
    gets ``operating_points`` when given, else a legacy single ``healthy_threshold`` when given, else neither;
    and ``series_operating_points`` when given."""
    import torch
    from transformers import ConvNextConfig, ConvNextForImageClassification, EfficientNetImageProcessor

    from mri_cascade.labels import TASKS

    torch.manual_seed(seed)
    for task in TASKS.values():
        id2label = dict(enumerate(task.classes))
        config = ConvNextConfig(
            num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], image_size=32,
            id2label=id2label, label2id={v: k for k, v in id2label.items()},
        )
        if task.name == "disease-detector" and operating_points is not None:
            config.operating_points = operating_points
        elif task.name == "disease-detector" and healthy_threshold is not None:
            config.healthy_threshold = healthy_threshold
        if task.name == "disease-detector" and series_operating_points is not None:
            config.series_operating_points = series_operating_points
        model = ConvNextForImageClassification(config)
        processor = EfficientNetImageProcessor(
            size={"height": 32, "width": 32}, do_center_crop=False, image_mean=[0.5] * 3, image_std=[0.5] * 3,
            include_top=False,
        )
        model.save_pretrained(root / task.name)
        processor.save_pretrained(root / task.name)
    return root


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    return save_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_cascade(tiny_models):
    from mri_cascade import Cascade

    return Cascade.from_pretrained(tiny_models)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_app(cascade):
    """The Space over ``cascade``, launched in-process on a free loopback port: (demo, url)."""
    from app import build_demo

    demo = build_demo(cascade)
    demo.queue(default_concurrency_limit=1)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def app_url(tiny_cascade):
    """The Space over the tiny models."""
    demo, url = launch_app(tiny_cascade)
    yield url
    demo.close()


def make_image_folder(root: Path, classes_per_split: dict[str, dict[str, int]], seed: int = 0) -> Path:
    """``root/<split>/<class>/<n>.jpg`` with distinct synthetic slices."""
    counter = seed * 10_000
    for split, classes in classes_per_split.items():
        for class_name, count in classes.items():
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                counter += 1
                image = synthetic_slice(counter, lesion="tumor" in class_name.lower())
                (folder / f"{index}.jpg").write_bytes(jpeg_bytes(image))
    return root


PATIENT_NAME, PATIENT_ID = "Doe^Jane", "PID-0042-SECRET"


def dicom_bytes(
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] = (1.0, 0.0),
    bits_stored: int = 12,
    with_pixels: bool = True,
    modality: str = "MR",
    body_part: str | None = None,
) -> bytes:
    """A DICOM file (explicit VR little endian, MR unless ``modality`` says otherwise) with a patient name and ID
    set; 3-D pixels are multi-frame."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    dataset.PatientName, dataset.PatientID, dataset.Modality = PATIENT_NAME, PATIENT_ID, modality
    if body_part:
        dataset.BodyPartExamined = body_part
    dataset.Rows, dataset.Columns = pixels.shape[-2:]
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    dataset.RescaleSlope, dataset.RescaleIntercept = rescale
    if pixels.ndim == 3:
        dataset.NumberOfFrames = len(pixels)
    if window:
        dataset.WindowCenter, dataset.WindowWidth = window
    if with_pixels:
        dataset.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def nifti_bytes(volume: np.ndarray, gzipped: bool = False) -> bytes:
    import gzip

    import nibabel

    data = nibabel.Nifti1Image(volume.astype(np.float32), affine=np.eye(4)).to_bytes()
    return gzip.compress(data) if gzipped else data


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb's shape)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def bad_input_corpus() -> list[tuple[str, bytes, str]]:
    """(file name, content, words the error must contain) for inputs that must be refused clearly."""
    import gzip

    rng = np.random.default_rng(7)
    scan = synthetic_slice(11)
    return [
        ("empty.jpg", b"", "empty (0 bytes)"),
        ("notes.jpg", b"Patient notes: follow-up in two weeks.\n" * 30, "not a readable image"),
        ("page.png", b"<!doctype html><html><body><h1>Not a scan</h1></body></html>" * 10, "not a readable image"),
        ("noise.jpg", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not a readable image"),
        ("cut.jpg", jpeg_bytes(scan)[:600], "damaged or truncated"),
        ("cut.png", encoded(scan, "PNG")[:300], "damaged or truncated"),
        ("bomb.png", _png_declaring(100_000, 100_000), "more pixels than the limit"),
        ("dot.png", encoded(Image.new("L", (1, 1)), "PNG"), "at least 32x32"),
        ("strip.png", encoded(Image.new("L", (10_000, 3), 90), "PNG"), "at least 32x32"),
        ("broken.dcm", b"\x00" * 128 + b"DICM" + rng.integers(0, 256, 300, dtype=np.uint8).tobytes(), "DICOM"),
        ("broken.nii", nifti_bytes(np.ones((8, 8, 8)))[:360], "NIfTI"),
        ("broken.nii.gz", gzip.compress(b"definitely not nifti" * 50), "not a NIfTI image"),
    ]


def odd_but_valid_corpus() -> list[tuple[str, bytes]]:
    """(file name, content) for unusual encodings that must still be answered."""
    scan = synthetic_slice(12)
    deep = Image.fromarray((np.asarray(scan, dtype=np.uint16) * 257).astype(np.uint16))
    rgba = scan.convert("RGBA")
    frames = [synthetic_slice(13), synthetic_slice(14)]
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    return [
        ("deep.png", encoded(deep, "PNG")),
        ("cmyk.jpg", encoded(scan.convert("CMYK"), "JPEG")),
        ("rgba.png", encoded(rgba, "PNG")),
        ("palette.png", encoded(scan.convert("P"), "PNG")),
        ("animated.gif", encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])),
        ("rotated.jpg", encoded(scan.convert("RGB"), "JPEG", exif=exif)),
        ("scan.tiff", encoded(scan, "TIFF")),
        ("scan.webp", encoded(scan, "WEBP", lossless=True)),
        ("scan.bmp", encoded(scan, "BMP")),
    ]


def ct_like_slice(size: int = 256, seed: int = 0, bleed: bool = False) -> Image.Image:
    """A head CT in a brain window: a saturated bone ring around a flat grey disc; with ``bleed``, a bright
    (bone-bright) blob inside the ring, as a fresh bleed is."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    cx, cy = size / 2 + rng.uniform(-8, 8), size / 2 + rng.uniform(-8, 8)
    radius = np.hypot((x - cx) / rng.uniform(0.38, 0.44), (y - cy) / rng.uniform(0.4, 0.46)) / size
    pixels = np.where(radius < 1, 255.0, 0.0)  # the skull
    pixels[radius < 0.88] = 95 + 6 * rng.standard_normal(int((radius < 0.88).sum()))  # the flat brain
    if bleed:
        bx, by = cx + rng.uniform(-0.15, 0.15) * size, cy + rng.uniform(-0.15, 0.15) * size
        pixels[np.hypot(x - bx, y - by) < rng.uniform(0.08, 0.14) * size] = 245
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")


def fit_tiny_familiarity(root: Path, components: int = 8) -> Path:
    """Fit and store the refusal check of the tiny models in ``root`` on synthetic slices, its CT test on CT-like
    slices without bleeds."""
    from mri_cascade import Cascade
    from mri_cascade.familiarity import FAMILIARITY_FILE
    from mri_cascade.research.probes import non_mri_images
    from mri_cascade.research.refusal_fit import Features, fit_familiarity, weights_sha256

    cascade = Cascade.from_pretrained(root)

    def features(images) -> Features:
        pixels = []
        embeddings = cascade.run_models(images, pixel_rows=pixels)[1]
        return Features(embeddings, np.stack(pixels))

    train = features([synthetic_slice(seed, lesion=seed % 2 == 1) for seed in range(80)])
    validation = features([synthetic_slice(seed, lesion=seed % 2 == 1) for seed in range(1000, 1040)])
    ct = features([ct_like_slice(seed=seed) for seed in range(40)])
    others = features([image for _, image in non_mri_images(seed=0)])
    check = fit_familiarity(train.embeddings, validation.embeddings, weights_sha256(root), components,
                            train_pixels=train.pixels, ct=ct, not_ct=others)
    check.save(root / "disease-detector" / FAMILIARITY_FILE)
    return root


@pytest.fixture(scope="session")
def guarded_models(tmp_path_factory, tiny_models) -> Path:
    """The tiny models plus a refusal check fitted on synthetic slices."""
    import shutil

    return fit_tiny_familiarity(shutil.copytree(tiny_models, tmp_path_factory.mktemp("guarded") / "models"))


@pytest.fixture(scope="session")
def guarded_cascade(guarded_models):
    from mri_cascade import Cascade

    return Cascade.from_pretrained(guarded_models)
