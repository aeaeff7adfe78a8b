import pytest

from mri_cascade.labels import LABEL_IDS, LABELS, TASKS, UNTYPED_TUMOR, answers_match, label_id_from_source


@pytest.mark.parametrize(
    "name, label",
    [
        ("NonDemented", "healthy"), ("Non_Demented", "healthy"), ("no_tumor", "healthy"), ("notumor", "healthy"),
        ("VeryMildDemented", "alzheimer_very_mild"), ("Very_Mild_Demented", "alzheimer_very_mild"),
        ("MildDemented", "alzheimer_mild"), ("Mild_Demented", "alzheimer_mild"),
        ("ModerateDemented", "alzheimer_moderate"), ("Moderate_Demented", "alzheimer_moderate"),
        ("glioma_tumor", "tumor_glioma"), ("glioma", "tumor_glioma"),
        ("meningioma_tumor", "tumor_meningioma"), ("meningioma", "tumor_meningioma"),
        ("pituitary_tumor", "tumor_pituitary"), ("pituitary", "tumor_pituitary"),
        ("tumor_glioma", "tumor_glioma"),
    ],
)
def test_every_known_spelling_maps_to_its_label(name, label):
    assert label_id_from_source(name) == label


def test_unknown_class_name_is_refused_clearly():
    with pytest.raises(ValueError, match="unknown class name 'cat'"):
        label_id_from_source("cat")


def test_seven_labels_with_display_names():
    assert LABEL_IDS == (
        "healthy", "alzheimer_very_mild", "alzheimer_mild", "alzheimer_moderate",
        "tumor_glioma", "tumor_meningioma", "tumor_pituitary",
    )
    assert LABELS["healthy"] == "No disease found"


def test_tasks_cover_the_taxonomy_along_every_path():
    assert list(TASKS) == ["disease-detector", "alzheimer-vs-tumor", "alzheimer-severity", "tumor-type"]
    # a tumor of unknown type (Br35H) teaches stages 1 and 2 only; no answer is ever that label
    assert set(TASKS["disease-detector"].members()) == set(LABEL_IDS) | {UNTYPED_TUMOR}
    assert set(TASKS["alzheimer-vs-tumor"].members()) == (set(LABEL_IDS) - {"healthy"}) | {UNTYPED_TUMOR}
    leaves = set(TASKS["alzheimer-severity"].members()) | set(TASKS["tumor-type"].members()) | {"healthy"}
    assert leaves == set(LABEL_IDS)
    for task in TASKS.values():
        assert set(task.class_of.values()) == set(task.classes)


def test_br35h_folders_and_an_untyped_tumor_answered_by_any_tumor_type():
    assert label_id_from_source("yes") == UNTYPED_TUMOR and label_id_from_source("no") == "healthy"
    answers = ["tumor_glioma", "healthy", None, "tumor_meningioma", "alzheimer_mild"]
    truth = [UNTYPED_TUMOR, UNTYPED_TUMOR, UNTYPED_TUMOR, "tumor_glioma", "alzheimer_mild"]
    assert answers_match(answers, truth).tolist() == [True, False, False, False, True]
