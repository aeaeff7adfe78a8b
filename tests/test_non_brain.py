"""Real medical images of the wrong kind are refused: DICOM headers that say so, and the pixels alone."""

import numpy as np
import pytest
from conftest import REPO_ROOT, dicom_bytes, synthetic_slice

from mri_cascade.cascade import Cascade
from mri_cascade.medical import dicom_kind_problem
from mri_cascade.research.probes import NON_BRAIN_PARTS, NON_BRAIN_SOURCES, non_brain_medical_images
from mri_cascade.results import REFUSED_DISPLAY_NAME

SCAN = np.asarray(synthetic_slice(40), dtype=np.uint16) * 16


@pytest.mark.parametrize("modality, body_part, words", [
    ("CT", None, "a CT scan (Modality CT)"),
    ("US", None, "an ultrasound image"),
    ("MR", "ABDOMEN", "shows the abdomen"),
    ("MR", "KNEE", "shows the knee"),
    ("XYZ", None, "modality is XYZ"),
])
def test_a_dicom_header_naming_another_kind_of_image_is_refused_in_plain_words(tiny_cascade, modality, body_part, words):
    result = tiny_cascade.predict(dicom_bytes(SCAN, modality=modality, body_part=body_part))
    assert result.refused and result.label is None and result.display_name == REFUSED_DISPLAY_NAME
    assert words in result.reason and "only 2-D brain MRI" in result.reason
    assert result.probabilities == {} and result.stages == []


@pytest.mark.parametrize("modality, body_part", [
    ("MR", None), ("MR", "HEAD"), ("MR", "BRAIN"), ("OT", None), ("", None),
    ("MR", "PITUITARY"), ("MR", "SELLA"), ("MR", "MRI BRAIN"), ("MR", "HEAD^NECK"), ("MR", "CEREBRUM"),
])
def test_a_head_mri_dicom_or_a_header_that_says_nothing_is_answered(tiny_cascade, modality, body_part):
    assert not tiny_cascade.predict(dicom_bytes(SCAN, modality=modality, body_part=body_part)).refused


def test_header_refusal_needs_refusal_switched_on_and_leaves_other_slices_of_a_series(tiny_cascade):
    ct = dicom_bytes(SCAN, modality="CT")
    assert not tiny_cascade.predict(ct, refuse_unfamiliar=False).refused
    series = tiny_cascade.predict_series([ct, synthetic_slice(41), synthetic_slice(42)])
    assert not series.refused and [item.refused for item in series.slices] == [True, False, False]
    assert "1 of 3 slices did not look like brain MRI" in series.reason
    all_ct = tiny_cascade.predict_series([ct, dicom_bytes(SCAN, modality="CT")])
    assert all_ct.refused and "CT scan" in all_ct.reason


def test_dicom_kind_problem_reads_only_named_modalities_and_body_parts():
    from pydicom.dataset import Dataset

    header = Dataset()
    assert dicom_kind_problem(header) is None
    header.Modality, header.BodyPartExamined = "MR", "HEAD_NECK"
    assert dicom_kind_problem(header) is None
    header.BodyPartExamined = "CHEST"
    assert "chest" in dicom_kind_problem(header)
    header.BodyPartExamined = "LSPINE"
    assert "lspine" in dicom_kind_problem(header)


def test_the_non_brain_set_splits_by_source_and_records_where_each_comes_from():
    development, held_out = (set(NON_BRAIN_PARTS[part]) for part in ("development", "held_out"))
    assert development and held_out and not development & held_out
    assert development | held_out == set(NON_BRAIN_SOURCES)
    images = non_brain_medical_images("held_out", variants=3)
    assert {source for source, _, _ in images} == held_out
    assert not any(image.info for _, _, image in images)  # pixels only: no DICOM header rides along
    assert {variant for _, variant, _ in images} >= {"as loaded", "crop", "flip"}


SHIPPED = REPO_ROOT / "models"


@pytest.mark.parametrize("part", ["development", "held_out"])
def test_the_shipped_cascade_refuses_every_real_non_brain_medical_image(part):
    """The pixels alone, as a PNG of them would give: held out is what reports/familiarity.json quotes."""
    cascade = Cascade.from_pretrained(SHIPPED)
    images = non_brain_medical_images(part)
    answered = [(source, variant, result.label) for (source, variant, _), result in
                zip(images, cascade.predict_batch([image for _, _, image in images])) if not result.refused]
    assert answered == []


def test_the_abdominal_mr_from_the_outside_check_is_refused_as_dicom_and_as_png(tmp_path):
    from mri_cascade.research.probes import non_brain_source_files

    cascade = Cascade.from_pretrained(SHIPPED)
    (path,) = non_brain_source_files("abdomen_mr")
    as_dicom = cascade.predict(path)
    assert as_dicom.refused and "abdomen" in as_dicom.reason
    from mri_cascade.images import load_image

    png = tmp_path / "abdomen.png"
    load_image(path).save(png)
    as_png = cascade.predict(png)
    assert as_png.refused and as_png.unfamiliarity > 1
