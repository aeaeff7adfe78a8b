"""DICOM and NIfTI decoding into 8-bit grey slices.

Only pixel data and the tags that say how to display it are read (rescale slope/intercept, window
centre/width, photometric interpretation, frame count). Patient fields are never read, logged or returned.
Values that come without a display window (a DICOM without window tags, a NIfTI volume) all go through one rule,
``value_window``, over the whole series or volume.
"""

from __future__ import annotations

import gzip
import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_SLICES = 512
"""A series or volume with more slices is refused."""
MAX_DECOMPRESSED_BYTES = 1 << 30
EMPTY_SLICE_SIGNAL = 0.05
"""A volume slice with less than this share of voxels above 10 % of the window is treated as empty and skipped."""


class MedicalImageError(ValueError):
    """The DICOM or NIfTI content cannot be used; the message says why (the caller adds the file name)."""


def is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def is_gzip(data: bytes) -> bool:
    return data[:2] == b"\x1f\x8b"


def is_nifti(data: bytes) -> bool:
    if len(data) >= 348 and data[344:348] in (b"n+1\x00", b"ni1\x00"):
        return struct.unpack("<i", data[:4])[0] == 348 or struct.unpack(">i", data[:4])[0] == 348
    return len(data) >= 540 and data[4:8] == b"n+2\x00"


def _to_uint8(array: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    scaled = (np.clip(array, low, high) - low) / (high - low) * 255.0
    return np.round(scaled).astype(np.uint8)


def value_window(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    """The one window for values that come without one (a DICOM without window tags, a NIfTI volume): the least
    and greatest value over all of ``arrays``, every slice of one series or volume, so the slices of a patient keep
    their contrast relative to one another. Being linear, it gives the same slice for the same pixels in any linear
    encoding (8 or 12 bits, rescale slope and intercept, MONOCHROME1), and an 8-bit picture spanning 0-255 wrapped
    as DICOM gets exactly its pixels back, so it is answered as the picture is. (A percentile window clipped the
    brightest 0.5 % and stretched the rest, slice by slice: the same pixels were answered otherwise.)"""
    return float(min(array.min() for array in arrays)), float(max(array.max() for array in arrays))


def to_grey(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """``values`` through ``window`` as 8-bit grey."""
    return _to_uint8(values, *window)


def _first(value) -> float:
    try:
        return float(value[0])
    except TypeError:
        return float(value)


FROM_VOLUME_KEY = "from_volume"
"""Key, in a loaded slice's PIL ``info``, set on the slices cut from a NIfTI volume."""
ORIENTATION_HINT = (
    "Its slices were cut from a NIfTI volume: if the volume's header (its affine) names the wrong axes, they are not "
    "axial and look like nothing the models know. Check the orientation it was saved in."
)
NOT_BRAIN_MRI_KEY = "not_brain_mri"
"""Key, in a loaded slice's PIL ``info``, of the plain-words reason its DICOM header gives for not being brain MRI."""
MODALITY_NAMES = {"CT": "a CT scan", "US": "an ultrasound image", "CR": "an X-ray (computed radiography)",
                  "DX": "an X-ray", "MG": "a mammogram", "NM": "a nuclear-medicine image", "PT": "a PET image",
                  "XA": "an X-ray angiogram", "RF": "a fluoroscopy image", "SEG": "a segmentation mask",
                  "OP": "an eye photograph", "ES": "an endoscopy image", "IO": "a dental X-ray", "PX": "a dental X-ray"}
HEAD_BODY_PART_WORDS = ("HEAD", "BRAIN", "SKULL", "CRAN", "CEREB", "SELL", "PITUIT", "IAC", "ORBIT", "NEURO",
                        "WHOLE", "ENTIRE")
"""Pieces of BodyPartExamined (free text in practice: "MRI BRAIN", "SELLA", "HEAD^NECK", ...) that may hold a brain
slice; a non-empty value with none of them names another body part."""


def dicom_kind_problem(dataset) -> str | None:
    """Why a DICOM header says its image is not a brain MRI, in plain words; None when it does not say so.

    Only a named modality other than MR (secondary captures, "OT", may be screenshots of an MRI) or a named body
    part with nothing of the head in it counts. Such a header refuses the image whatever its pixels look like; a
    header that says nothing leaves the decision to the pixels (the refusal check), since headers can be missing.
    """
    modality = str(dataset.get("Modality", "") or "").strip().upper()
    body_part = str(dataset.get("BodyPartExamined", "") or "").strip().upper()
    if modality in MODALITY_NAMES:
        return f"Its DICOM header says it is {MODALITY_NAMES[modality]} (Modality {modality}), not an MRI."
    if modality not in ("", "MR", "OT", "SC") and modality.isalpha():
        return f"Its DICOM header says its modality is {modality}, not MR."
    if body_part and not any(word in body_part for word in HEAD_BODY_PART_WORDS):
        return f"Its DICOM header says it shows the {body_part.lower()} (BodyPartExamined), not the head."
    return None


def header_window(values: np.ndarray, dataset) -> np.ndarray | None:
    """The rescaled frames through the VOI LUT or window that the header gives (pydicom's ``apply_voi_lut``:
    linear, linear-exact or sigmoid windows, or a VOI LUT sequence), as 8-bit grey; None when it gives neither.

    pydicom maps into the output range of the stored bits; two sentinel values far outside any window, run through
    with the pixels, give that range's ends, which become 0 and 255."""
    from pydicom.pixels import apply_voi_lut

    has_window = "WindowCenter" in dataset and "WindowWidth" in dataset and _first(dataset.WindowWidth) > 0
    if "VOILUTSequence" not in dataset and not has_window:
        return None
    reach = float(np.abs(values).max()) * 4 + 1e6
    out = np.asarray(apply_voi_lut(np.concatenate([values.ravel(), [-reach, reach]]), dataset), dtype=np.float64)
    low, high = out[-2], out[-1]
    if not high > low:
        return None
    return _to_uint8(out[:-2].reshape(values.shape), low, high)


@dataclass
class DicomFrames:
    """A DICOM file's frames, from one parse of it: as 8-bit grey when its header gives a window (``grey``), else
    rescaled values for ``value_window`` (``values``), and what its header says against it being a brain MRI."""

    grey: np.ndarray | None  # (frames, H, W) uint8 through the header's window, MONOCHROME1 already inverted
    values: np.ndarray | None  # (frames, H, W) rescaled stored values, when the header gives no window
    inverted: bool  # MONOCHROME1: the grey made of ``values`` is to be inverted
    note: str | None  # ``dicom_kind_problem``

    def frames(self, window: tuple[float, float] | None = None) -> list[np.ndarray]:
        """Every frame as 8-bit grey; ``values`` through ``window`` (default: ``value_window`` of this file's)."""
        if self.grey is not None:
            return list(self.grey)
        grey = to_grey(self.values, window or value_window([self.values]))
        return list(255 - grey if self.inverted else grey)


def read_dicom(data: bytes) -> DicomFrames:
    """Every frame of a DICOM file, rescaled, and through its header's window when it gives one (``DicomFrames``)."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_rescale

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, struct.error) as error:
        raise MedicalImageError(f"is a damaged DICOM file ({error})") from None
    if "PixelData" not in dataset:
        raise MedicalImageError("is a DICOM file without pixel data (a report or structured document?)")
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # pydicom raises many types for unsupported or broken encodings
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", "unknown transfer syntax")
        raise MedicalImageError(f"has DICOM pixel data that cannot be decoded ({name}): {error}") from None
    samples = int(dataset.get("SamplesPerPixel", 1))
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    pixels = np.asarray(pixels)
    if samples > 1:  # colour: grey is the mean of the channels
        pixels = pixels.mean(axis=-1)
    if frames == 1 or pixels.ndim == 2:
        pixels = pixels.reshape((1, *pixels.shape[-2:]))
    if len(pixels) > MAX_SLICES:
        raise MedicalImageError(f"has {len(pixels)} frames; at most {MAX_SLICES} are accepted")
    values = np.asarray(apply_rescale(pixels, dataset), dtype=np.float64) if samples == 1 else pixels.astype(float)
    windowed = header_window(values, dataset) if samples == 1 else None
    inverted = str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    if windowed is not None:
        return DicomFrames(255 - windowed if inverted else windowed, None, inverted, dicom_kind_problem(dataset))
    return DicomFrames(None, values, inverted, dicom_kind_problem(dataset))


def nifti_slices(data: bytes) -> list[np.ndarray]:
    """Axial slices of a 2-D or 3-D NIfTI image, canonical (RAS) orientation, anterior up, empty ones skipped."""
    import nibabel

    if is_gzip(data):
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
                data = stream.read(MAX_DECOMPRESSED_BYTES + 1)
        except (OSError, EOFError) as error:
            raise MedicalImageError(f"is a damaged gzip file ({error})") from None
        if len(data) > MAX_DECOMPRESSED_BYTES:
            raise MedicalImageError(f"decompresses to more than {MAX_DECOMPRESSED_BYTES >> 20} MB")
        if not is_nifti(data):
            raise MedicalImageError("is gzip-compressed but not a NIfTI image")
    image_class = nibabel.Nifti2Image if data[4:8] == b"n+2\x00" else nibabel.Nifti1Image
    try:
        image = nibabel.as_closest_canonical(image_class.from_bytes(data))
        volume = np.asarray(image.dataobj, dtype=np.float64)
    except Exception as error:  # nibabel raises many types for truncated or inconsistent headers
        raise MedicalImageError(f"is a damaged NIfTI image ({error})") from None
    while volume.ndim > 3 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim > 3:
        raise MedicalImageError(
            f"is a {volume.ndim}-D NIfTI image of shape {volume.shape} (a time series or several volumes); "
            "send one 2-D slice or 3-D volume"
        )
    if volume.ndim == 2:
        volume = volume[:, :, None]
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise MedicalImageError(f"has an unusable shape {volume.shape}")
    if volume.shape[2] > MAX_SLICES:
        raise MedicalImageError(f"has {volume.shape[2]} slices; at most {MAX_SLICES} are accepted")
    if not np.isfinite(volume).all():
        volume = np.nan_to_num(volume, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = value_window([volume])
    slices = []
    for index in range(volume.shape[2]):
        axial = np.rot90(volume[:, :, index])  # x to the right, anterior at the top
        if volume.shape[2] > 1 and (axial > low + 0.1 * (high - low)).mean() < EMPTY_SLICE_SIGNAL:
            continue
        slices.append(_to_uint8(axial, low, high))
    if not slices:
        raise MedicalImageError("holds no slice with enough signal to read")
    return slices
