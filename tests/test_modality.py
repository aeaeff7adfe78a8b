"""The modality audit and the CT refusal: CT-like pictures are told apart, audited non-MRI files never reach a model."""

import numpy as np
import pytest
from conftest import make_image_folder, synthetic_slice
from PIL import Image

import mri_cascade.research.data as data
from mri_cascade.decisions import refuses
from mri_cascade.familiarity import CT_REFUSAL_REASON
from mri_cascade.modality import bone_rim, erode


def ct_like_slice(size: int = 256, seed: int = 0) -> Image.Image:
    """A head CT in a brain window, as the rule sees it: a saturated bone ring around a flat grey disc."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    radius = np.hypot(x - size / 2, y - size / 2) / (0.42 * size)
    pixels = np.where(radius < 1, 255.0, 0.0)  # the skull
    pixels[radius < 0.88] = 95 + 6 * rng.standard_normal(int((radius < 0.88).sum()))  # the flat brain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")


@pytest.mark.parametrize("iterations", [1, 6, 14])
def test_the_erosion_is_scipys_binary_erosion(iterations):
    from scipy.ndimage import binary_erosion

    rng = np.random.default_rng(iterations)
    masks = [rng.random((128, 128)) > 0.2, np.ones((40, 70), dtype=bool),
             np.asarray(ct_like_slice(128)) > 25]  # noise, a mask touching every edge, a head
    for mask in masks:
        np.testing.assert_array_equal(erode(mask, iterations), binary_erosion(mask, iterations=iterations))


def test_the_rule_tells_a_ct_like_slice_from_an_mri_like_one():
    assert bone_rim(ct_like_slice()).looks_like_ct
    assert not bone_rim(synthetic_slice(3)).looks_like_ct
    assert not bone_rim(synthetic_slice(4, lesion=True)).looks_like_ct
    assert not bone_rim(Image.new("L", (64, 64))).looks_like_ct  # blank: nothing to measure


def test_a_ct_looking_picture_is_refused_from_the_ct_floor_on():
    refused = refuses(np.array([0.7, 0.7, 0.4, 1.2]), np.array([True, False, True, False]), ct_floor=0.5)
    assert refused.tolist() == [True, False, False, True]


def test_the_cascade_refuses_a_ct_like_slice_and_says_it_looks_like_ct(guarded_cascade):
    result = guarded_cascade.predict(ct_like_slice())
    assert result.refused and result.label is None
    assert result.reason == CT_REFUSAL_REASON


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
