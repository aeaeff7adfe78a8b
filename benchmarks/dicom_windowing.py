"""How far answers move when the same pixels come as DICOM or NIfTI instead of the picture they were taken from.

Real slices (JPEG, from the collections' test splits) are each rendered, in memory, as a DICOM without window tags
(8-bit; 12-bit scaled by 16; 12-bit inverted with MONOCHROME1; 12-bit with rescale slope 0.5 and intercept -1000)
and as a one-slice NIfTI image. Each rendering goes through the loader and the cascade and is compared with the
picture: pixels that differ, answers that differ, and how far the probabilities moved. Nothing is written to disk.

    PYTHONPATH=. python benchmarks/dicom_windowing.py ../shared/data --slices 40
"""

from __future__ import annotations

import argparse
import io
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mri_cascade import Cascade, load_image

COLLECTIONS = ("alzheimer", "brain_tumor")


def dicom_rendering(stored: np.ndarray, bits: int = 12, photometric: str = "MONOCHROME2",
                    rescale: tuple[float, float] = (1.0, 0.0)) -> bytes:
    """A single-frame MR DICOM (explicit VR little endian, 16 bits allocated) of ``stored``, without window tags."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID, dataset.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    dataset.Rows, dataset.Columns = stored.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, bits, bits - 1, 0
    dataset.RescaleSlope, dataset.RescaleIntercept = rescale
    dataset.PixelData = np.ascontiguousarray(stored, dtype=np.uint16).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def nifti_rendering(pixels: np.ndarray) -> bytes:
    """A one-slice NIfTI image that the loader cuts back into ``pixels`` (it shows axial slices anterior up)."""
    import nibabel

    volume = np.rot90(pixels.astype(np.float32), k=-1)[:, :, None]
    return nibabel.Nifti1Image(volume, affine=np.eye(4)).to_bytes()


RENDERINGS: dict[str, Callable[[np.ndarray], bytes]] = {
    "DICOM 8-bit": lambda p: dicom_rendering(p, bits=8),
    "DICOM 12-bit (x16)": lambda p: dicom_rendering(p * 16),
    "DICOM 12-bit MONOCHROME1": lambda p: dicom_rendering(4095 - p * 16, photometric="MONOCHROME1"),
    "DICOM 12-bit slope 0.5, intercept -1000": lambda p: dicom_rendering(p * 16, rescale=(0.5, -1000.0)),
    "NIfTI": nifti_rendering,
}


def sample_slices(root: Path, count: int, seed: int) -> list[Path]:
    """``count`` test-split pictures drawn at random from the collections under ``root``."""
    files = sorted(path for collection in COLLECTIONS for path in (root / collection / "test").rglob("*.jpg"))
    if not files:
        raise SystemExit(f"no test-split pictures under {root}/{{{','.join(COLLECTIONS)}}}/test")
    return random.Random(seed).sample(files, min(count, len(files)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", default="../shared/data", help="The folder holding the collections.")
    parser.add_argument("--slices", type=int, default=40, help="Real slices to render.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the draw of slices.")
    parser.add_argument("--models", default=None, help="Models directory or Hub prefix (default: the shipped models/).")
    args = parser.parse_args()

    cascade = Cascade.from_pretrained(args.models)
    pictures = [load_image(path) for path in sample_slices(Path(args.data), args.slices, args.seed)]
    pixels = [np.asarray(picture)[..., 0].astype(np.uint16) for picture in pictures]
    full_range = sum(int(p.min() == 0 and p.max() == 255) for p in pixels)
    print(f"{len(pictures)} slices; {full_range} of them span 0-255")
    given = cascade.predict_batch(pictures)
    print(f"{'rendering':<42}{'pixels off (mean, max)':>24}{'answer changed':>16}{'refusal changed':>17}"
          f"{'|dP(healthy)| mean, max':>26}{'joint TV mean':>15}")
    for name, render in RENDERINGS.items():
        loaded = [load_image(render(p)) for p in tqdm(pixels, desc=name, leave=False)]
        moved = [np.abs(np.asarray(image)[..., 0].astype(int) - p.astype(int)) for image, p in zip(loaded, pixels)]
        results = cascade.predict_batch(loaded)
        both = [(r, g) for r, g in zip(results, given) if not r.refused and not g.refused]
        changed = sum(r.label != g.label for r, g in zip(results, given))
        refusals = sum(r.refused != g.refused for r, g in zip(results, given))
        healthy = [abs(r.probabilities["healthy"] - g.probabilities["healthy"]) for r, g in both]
        distance = [0.5 * sum(abs(r.probabilities[k] - g.probabilities[k]) for k in g.probabilities) for r, g in both]
        print(f"{name:<42}{np.mean([m.mean() for m in moved]):>15.2f}, {max(int(m.max()) for m in moved):>6}"
              f"{changed:>11} of {len(pictures):<3}{refusals:>12} of {len(pictures):<3}"
              f"{np.mean(healthy) if healthy else 0:>17.4f}, {max(healthy, default=0):.4f}"
              f"{np.mean(distance) if distance else 0:>15.4f}")


if __name__ == "__main__":
    main()
