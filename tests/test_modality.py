"""The modality audit and the CT refusal: CT-like pictures are told apart, audited non-MRI files never reach a model."""

import numpy as np
import pytest
from conftest import ct_like_slice, make_image_folder, synthetic_slice
from PIL import Image

import mri_cascade.research.data as data
from mri_cascade.decisions import refuses
from mri_cascade.familiarity import CT_REFUSAL_REASON
from mri_cascade.modality import PIXEL_FEATURES, erode, pixel_features


@pytest.mark.parametrize("iterations", [1, 6, 14])
def test_the_erosion_is_scipys_binary_erosion(iterations):
    from scipy.ndimage import binary_erosion

    rng = np.random.default_rng(iterations)
    masks = [rng.random((128, 128)) > 0.2, np.ones((40, 70), dtype=bool),
             np.asarray(ct_like_slice(128)) > 25]  # noise, a mask touching every edge, a head
    for mask in masks:
        np.testing.assert_array_equal(erode(mask, iterations), binary_erosion(mask, iterations=iterations))


def test_pixel_features_see_the_bone_ring_at_the_edge_not_a_bleed_inside():
    """The edge profile is bright at the head's edge for CT, bleed or not, and dark there for an MRI-like slice."""
    plain, bleeding, mri = (pixel_features(image) for image in (ct_like_slice(), ct_like_slice(bleed=True),
                                                                synthetic_slice(4, lesion=True)))
    assert plain.shape == (PIXEL_FEATURES,) and plain.dtype == np.float32
    edge = slice(3, 7)  # the profile's second to fifth rings (the first is blurred with the background)
    assert plain[edge].mean() > 0.9 and bleeding[edge].mean() > 0.9 and mri[edge].mean() < 0.7
    assert bleeding[1] > plain[1]  # the bleed saturates the inner brain
    assert not pixel_features(Image.new("L", (64, 64))).any()  # blank: nothing to measure


def test_a_ct_looking_picture_is_refused_however_familiar():
    refused = refuses(np.array([0.7, 0.7, 0.4, 1.2]), np.array([True, False, True, False]))
    assert refused.tolist() == [True, False, True, True]


def test_a_ct_with_a_bright_bleed_inside_the_ring_is_refused_as_ct(guarded_cascade):
    """The CT test learned from CT-like slices without bleeds; a bleed inside the ring must not make it pass as MRI.
    Catches the old bone-rim rule, which asked for a flat brain (a bleed made it say 'not CT')."""
    for seed in range(100, 106):
        result = guarded_cascade.predict(ct_like_slice(seed=seed, bleed=True))
        assert result.refused and result.label is None and result.reason == CT_REFUSAL_REASON


def test_the_cascade_refuses_a_ct_like_slice_and_says_it_looks_like_ct(guarded_cascade):
    result = guarded_cascade.predict(ct_like_slice(seed=200))
    assert result.refused and result.label is None
    assert result.reason == CT_REFUSAL_REASON


def test_an_mri_like_slice_with_an_enhancing_lesion_is_answered(guarded_cascade):
    for seed in range(3100, 3106):
        result = guarded_cascade.predict(synthetic_slice(seed, lesion=True))
        assert not result.refused and result.label


@pytest.fixture()
def audited_collection(tmp_path, monkeypatch):
    """A synthetic collection with two of its healthy files listed as CT."""
    root = make_image_folder(tmp_path / "brain_tumor", {"train": {"no_tumor": 4, "glioma_tumor": 3},
                                                          "test": {"no_tumor": 2, "glioma_tumor": 2}}, seed=5)
    listed = {"train/no_tumor/0.jpg": "CT", "test/no_tumor/1.jpg": "CT"}
    monkeypatch.setattr(data, "audited_non_mri", lambda: {"brain_tumor": dict(listed)})
    return root, listed


def test_loaders_never_yield_an_audited_non_mri_file(audited_collection):
    root, listed = audited_collection
    splits = data.load_sources([str(root)])
    files = [file for split in splits.values() for file in split["file"]]
    assert len(files) == 11 - len(listed) and not set(listed) & set(files)
    train, validation = data.split_validation(splits["train"], list(range(len(splits["train"]))), fraction=0.5)
    assert not set(listed) & (set(train["file"]) | set(validation["file"]))


def test_non_mri_images_load_on_request_with_their_modality(audited_collection):
    root, listed = audited_collection
    splits = data.load_sources([str(root)], non_mri=True)
    ct = data.only_non_mri(splits["test"])
    assert ct["file"] == ["test/no_tumor/1.jpg"] and ct["modality"] == ["CT"]
    assert len(data.only_mri(splits["train"])) == 6


def test_an_audited_file_missing_from_the_tree_fails_loudly(audited_collection):
    root, _ = audited_collection
    (root / "train" / "no_tumor" / "0.jpg").unlink()
    with pytest.raises(ValueError, match="modality audit.*lists 1 file.*train/no_tumor/0.jpg"):
        data.load_source(str(root))


def test_the_committed_audit_lists_existing_files_only_once():
    listed = data.audited_non_mri()
    assert sum(len(files) for files in listed.values()) == len(data.NON_MRI_LIST.read_text().splitlines()) - 1
    assert set(listed) <= {"alzheimer", "brain_tumor", "br35h"}
