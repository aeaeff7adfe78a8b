import numpy as np
import pytest
from conftest import make_image_folder
from datasets import Dataset
from PIL import Image

from mri_cascade.labels import TASKS
from mri_cascade.research.audit import (
    NO_TRAINING_SUBJECT,
    SEVERAL_FOLDS,
    fingerprint_dataset,
    fingerprint_images,
    near_duplicate_groups,
    subject_folds,
    subject_in_reference,
)
from mri_cascade.research.data import (
    cross_source_split,
    expand_sources,
    fold_assignment,
    load_source,
    load_sources,
    split_validation,
    task_dataset,
    true_families,
)


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_image_folder(root / "alzheimer", {
        "train": {"NonDemented": 6, "VeryMildDemented": 6, "MildDemented": 6, "ModerateDemented": 3},
        "test": {"NonDemented": 2, "MildDemented": 2},
    }, seed=1)
    # Hub-style spellings and split names (Training/Testing) on the tumor side
    make_image_folder(root / "brain_tumor", {
        "Training": {"notumor": 4, "glioma": 5, "meningioma": 5, "pituitary": 5},
        "Testing": {"notumor": 2, "glioma": 2},
    }, seed=2)
    return root


def test_a_collection_loads_with_label_ids(collections):
    splits = load_source(str(collections / "alzheimer"))
    assert set(splits) == {"train", "test"}
    assert sorted(set(splits["train"]["label_id"])) == [
        "alzheimer_mild", "alzheimer_moderate", "alzheimer_very_mild", "healthy"]
    assert set(splits["train"]["source"]) == {"alzheimer"}


def test_subjects_come_from_the_collections_subject_list(collections, tmp_path):
    import shutil

    root = tmp_path / "alzheimer"
    shutil.copytree(collections / "alzheimer", root)
    (root / "subjects.csv").write_text("path,subject,entropy_rank\ntrain/MildDemented/0.jpg,MildDemented_s007,1\n")
    train = load_source(str(root))["train"]
    named = dict(zip(train["file"], train["subject"]))
    assert named["train/MildDemented/0.jpg"] == "MildDemented_s007"
    assert set(named.values()) == {"MildDemented_s007", ""}  # unlisted files have no subject
    assert set(load_source(str(collections / "brain_tumor"))["train"]["subject"]) == {""}


def test_hub_style_folders_and_split_names_are_understood(collections):
    splits = load_source(str(collections / "brain_tumor"))
    assert set(splits) == {"train", "test"}
    assert set(splits["train"]["label_id"]) == {"healthy", "tumor_glioma", "tumor_meningioma", "tumor_pituitary"}


def test_a_folder_of_collections_expands_and_concatenates(collections):
    sources = expand_sources([str(collections)])
    assert [s.split("/")[-1] for s in sources] == ["alzheimer", "brain_tumor"]
    splits = load_sources(sources)
    assert len(splits["train"]) == 21 + 19 and len(splits["test"]) == 8


def test_task_datasets_keep_their_members_and_label_them(collections):
    train = load_sources(expand_sources([str(collections)]))["train"]
    for task in TASKS.values():
        subset = task_dataset(train, task)
        assert subset.features["label"].names == list(task.classes)
        assert set(subset["label_id"]) <= set(task.members())
        for label_id, label in zip(subset["label_id"], subset["label"]):
            assert task.classes[label] == task.class_of[label_id]
    assert len(task_dataset(train, TASKS["tumor-type"])) == 15


def test_validation_split_is_stratified_and_keeps_groups_together(collections):
    train = load_sources(expand_sources([str(collections)]))["train"]
    groups = np.arange(len(train)) // 2  # pairs of images that must stay on one side
    kept, held_out = split_validation(train, groups, fraction=0.25, seed=0)
    assert len(kept) + len(held_out) == len(train) and 0 < len(held_out) < len(train)
    kept_groups = {groups[i] for i, image in enumerate(train["image"]) if image in kept["image"]}
    held_groups = {groups[i] for i, image in enumerate(train["image"]) if image in held_out["image"]}
    assert not kept_groups & held_groups
    assert split_validation(train, groups, 0.25, seed=0)[1]["label_id"] == held_out["label_id"]


def test_validation_folds_partition_train_and_fold_zero_is_the_default(collections):
    train = load_sources(expand_sources([str(collections)]))["train"]
    train = train.add_column("row", list(range(len(train))))
    groups = np.arange(len(train)) // 2
    held_out = [split_validation(train, groups, fraction=0.25, seed=0, fold=fold)[1]["row"] for fold in range(4)]
    assert sorted(row for rows in held_out for row in rows) == list(range(len(train)))  # each row held out once
    assert held_out[0] == split_validation(train, groups, fraction=0.25, seed=0)[1]["row"]
    with pytest.raises(ValueError, match="folds 0-3"):
        split_validation(train, groups, fraction=0.25, seed=0, fold=4)


def test_near_duplicate_groups_link_copies(collections):
    rng = np.random.default_rng(0)
    scans = [Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).resize((176, 208)) for _ in range(5)]
    doubled = [*scans, *[scan.resize((150, 180)) for scan in scans]]
    groups = near_duplicate_groups(fingerprint_images(doubled).thumbnails)
    assert all(groups[i] == groups[i + 5] for i in range(5))
    assert len(set(groups)) == 5


def test_fold_assignment_names_the_fold_split_validation_holds_out(collections):
    train = load_sources(expand_sources([str(collections)]))["train"]
    train = train.add_column("row", list(range(len(train))))
    groups = np.arange(len(train)) // 2
    assignment = fold_assignment(train["label_id"], groups, fraction=0.25, seed=0)
    for fold in range(4):
        assert split_validation(train, groups, 0.25, seed=0, fold=fold)[1]["row"] == list(np.flatnonzero(assignment == fold))


def _subject_slices(rng: np.random.Generator, slices: int) -> np.ndarray:
    """Thumbnails of one synthetic subject: neighbouring slices differ a little, slices three apart a lot."""
    rows = rng.normal(size=64) + rng.normal(size=(slices, 64)).cumsum(axis=0) * 0.1
    rows -= rows.mean(axis=1, keepdims=True)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_test_slices_are_traced_to_their_subjects_training_slices_through_chains():
    rng = np.random.default_rng(0)
    subject_a, subject_b, stranger = (_subject_slices(rng, 9) for _ in range(3))
    train = np.concatenate([subject_a[:6], subject_b[:6]])
    train_folds = np.array([0] * 6 + [1] * 6)  # subject a held out by fold 0, subject b by fold 1
    far = np.stack([subject_a[8], subject_b[8], stranger[0]])
    assert (far @ train.T).max() < 0.99  # no test slice here is a near copy of a training slice ...
    test = np.concatenate([far, subject_a[6:8], subject_b[6:8]])  # ... but slices 6-7 link 8 to its subject
    assert list(subject_in_reference(test, train)) == [True, True, False, True, True, True, True]
    assert list(subject_folds(test, train, train_folds)) == [0, 1, NO_TRAINING_SUBJECT, 0, 0, 1, 1]
    bridge = (subject_a[5] + subject_b[0]) / np.linalg.norm(subject_a[5] + subject_b[0])  # a test image like both
    assert subject_folds(np.stack([bridge]), train, train_folds, threshold=0.6)[0] == SEVERAL_FOLDS


def test_unknown_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path} is no collection .* and holds none"):
        expand_sources([str(tmp_path)])


def test_the_collections_give_the_same_scans_and_folds_in_any_order(collections):
    """Catches the folds drawn over the scans in the order the roots were given: named in another order, the same
    collections drew other folds ("the kept logits of fold 1 lack 194 of the scans asked for")."""
    from mri_cascade.research.fold_logits import scan_keys

    roots = [str(collections / "alzheimer"), str(collections / "brain_tumor")]
    assert expand_sources(roots[::-1]) == expand_sources(roots) == roots
    folds = []
    for order in (roots, roots[::-1]):
        train = load_sources(order)["train"]
        groups = near_duplicate_groups(fingerprint_dataset(train).thumbnails)
        folds.append(dict(zip(scan_keys(train), fold_assignment(train["label_id"], groups, 1 / 3))))
    assert list(folds[0]) == list(folds[1]) and folds[0] == folds[1]


def test_a_folder_of_another_kind_beside_the_collections_is_named_and_skipped(collections, tmp_path, capsys):
    """Catches "unknown class name 'normal'" with no word of which folder: ../shared/data also holds head_ct/
    (class folders, no splits) and tumor_boxes/ (box files), which are no image-folder collections."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(collections / "alzheimer", root / "alzheimer")
    make_image_folder(root / "head_ct", {"normal": {"1": 1}, "stroke": {"1": 1}})  # class folders, no splits
    (root / "tumor_boxes" / "br35h").mkdir(parents=True)
    (root / "tumor_boxes" / "br35h" / "y0.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    make_image_folder(root / "scans_ct", {"train": {"normal": 2}})  # splits, but a class of no collection here
    assert expand_sources([str(root)]) == [str(root / "alzheimer")]
    notes = capsys.readouterr().err
    for folder in ("head_ct", "tumor_boxes"):
        assert f"note: skipping {root / folder}: it has no train/ or test/ folder of class folders" in notes
    assert f"note: skipping {root / 'scans_ct'}: it has a class folder train/normal/, which is none of" in notes
    with pytest.raises(ValueError, match=f"{root / 'scans_ct'} has a class folder train/normal/"):
        load_sources([str(root / "scans_ct")])


def test_reports_name_local_paths_relative_to_the_project():
    """Catches benchmark.json storing the absolute path of the checkout's models/."""
    from conftest import REPO_ROOT

    from mri_cascade.research.data import report_path

    assert report_path(REPO_ROOT / "models") == "models"
    assert report_path(str(REPO_ROOT.parent / "shared" / "data" / "alzheimer")) == "../shared/data/alzheimer"
    assert report_path("org/some-dataset") == "org/some-dataset"


def test_a_model_whose_folds_were_drawn_in_another_order_is_warned_of(tmp_path, capsys):
    """Catches out-of-fold figures taken silently for models trained with the collections in another order (the
    shipped ones: alzheimer, brain_tumor, br35h) than the one the folds are drawn in."""
    import json

    from mri_cascade.research.data import fold_order_problem
    from mri_cascade.research.fitting import warn_of_fold_order

    assert fold_order_problem(["../shared/data/alzheimer", "../shared/data/br35h", "../shared/data/brain_tumor"]) is None
    (tmp_path / "training_args.json").write_text(json.dumps({"data": ["x/alzheimer", "x/brain_tumor", "x/br35h"]}))
    warn_of_fold_order([str(tmp_path)])
    assert "it was trained with its collections in the order alzheimer, brain_tumor, br35h" in capsys.readouterr().err


def test_true_families_follow_the_collection_of_healthy_scans(collections):
    train = load_sources(expand_sources([str(collections)]))["train"]
    families = true_families(train)
    for source, label, family in zip(train["source"], train["label_id"], families):
        assert family == ("alzheimer" if "alzheimer" in source else "tumor"), (source, label)
    assert {"alzheimer", "tumor"} <= set(families[np.asarray(train["label_id"]) == "healthy"])


def test_cross_source_split_holds_out_other_sources_of_learned_classes_only():
    rows = [  # (collection, label, size, near-duplicate group)
        *[("alzheimer", "healthy", (176, 208), g) for g in range(6)],  # makes "healthy" mostly main-source overall
        *[("tumor", "tumor_glioma", (512, 512), g) for g in range(10, 14)],
        *[("tumor", "tumor_meningioma", (512, 512), g) for g in range(20, 23)],
        ("tumor", "tumor_meningioma", (300, 300), 30),  # held out
        ("tumor", "tumor_meningioma", (300, 300), 20),  # a copy of a main-source scan: stays in training
        *[("tumor", "healthy", (236, 236), g) for g in range(40, 43)],  # no main-source healthy tumor scans
        ("tumor", "tumor_pituitary", (512, 512), 50),
        *[("tumor", "tumor_pituitary", (250, 250), g) for g in range(51, 54)],  # mostly other-source: not learned
    ]
    train = Dataset.from_dict({"source": [r[0] for r in rows], "label_id": [r[1] for r in rows],
                               "row": list(range(len(rows)))})
    kept, held_out = cross_source_split(train, [r[2] for r in rows], [r[3] for r in rows])
    assert list(held_out["row"]) == [13]
    assert sorted([*kept["row"], *held_out["row"]]) == list(range(len(rows)))


def test_a_dataset_is_fingerprinted_as_its_images_are():
    """Catches the cached ``Dataset.map`` path losing order, sizes or precision against ``fingerprint_images``."""
    from datasets import Dataset, Features
    from datasets import Image as ImageFeature

    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (40 + i, 30), dtype=np.uint8)) for i in range(5)]
    dataset = Dataset.from_dict({"image": images}, features=Features({"image": ImageFeature()}))
    direct, mapped = fingerprint_images(images), fingerprint_dataset(dataset)
    assert mapped.exact == direct.exact and mapped.sizes == direct.sizes == [(30, 40 + i) for i in range(5)]
    np.testing.assert_allclose(mapped.thumbnails, direct.thumbnails, atol=1e-6)
