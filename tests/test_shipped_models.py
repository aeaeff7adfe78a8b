"""The shipped models: they load with transformers alone, and the cascade still reads real scans."""

import json
from pathlib import Path

import pytest
from conftest import REPO_ROOT, SHARED_DATA
from PIL import Image

from mri_cascade import LABEL_IDS, Cascade
from mri_cascade.labels import TASKS, label_id_from_source

MODELS = REPO_ROOT / "models"
SAMPLE_PER_CLASS = 12
# The shipped cascade scores 51/96 = 0.531 on this fixed sample (the first 12 MRI scans of each of the 8 test
# folders), one of them refused; the floor sits four scans below (47/96). A broken preprocessing step, model or
# threshold lands lower.
ACCURACY_FLOOR = 0.489
MAX_REFUSED = 1
FRAMING_MAX_NEW_REFUSALS = 1  # of 32: measured 1 with the border (a healthy scan at unfamiliarity 1.04), 0 mirrored
FRAMING_SAME_ANSWER_FLOOR = 0.9  # of the answered originals: measured 29 of 31 either way


@pytest.mark.parametrize("task", list(TASKS))
def test_each_shipped_model_classifies_with_pipeline_alone(task):
    """``pipeline`` with no project code gives the model's own answer: the same top class and score as running the
    weights on the processor's pixels (catches a config whose id2label or preprocessing does not fit the weights)."""
    import torch
    from conftest import synthetic_slice
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    folder = MODELS / task
    assert all(path.stat().st_size < 20_000_000 for path in folder.rglob("*") if path.is_file())
    real = sorted((SHARED_DATA / "brain_tumor" / "test" / "glioma_tumor").glob("*.jpg"))[:1]
    image = Image.open(real[0]).convert("RGB") if real else synthetic_slice(5, lesion=True).convert("RGB")
    (top, *_) = pipeline("image-classification", model=str(folder))(image)
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(**AutoImageProcessor.from_pretrained(folder)(image, return_tensors="pt")).logits[0]
    probabilities = logits.softmax(-1)
    assert top["label"] == model.config.id2label[int(probabilities.argmax())] in TASKS[task].classes
    assert top["score"] == pytest.approx(float(probabilities.max()), abs=1e-4)


@pytest.mark.parametrize("task", list(TASKS))
def test_each_shipped_model_card_has_valid_metadata_and_test_figures(task):
    import yaml
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = ModelCard.load(MODELS / task / "README.md")
    assert card.data.pipeline_tag == "image-classification" and "Not a medical device" in card.text
    _, results = model_index_to_eval_results(yaml.safe_load(card.content.split("---")[1])["model-index"])
    assert {r.metric_type for r in results} == {"accuracy", "f1"}
    # the card says when its test figures come with the cascade's test-time flips, which a pipeline does not apply
    flips = json.loads((MODELS / task / "config.json").read_text()).get("test_time_flips", False)
    assert ("mirror image" in card.text) == flips


def test_the_shipped_cascade_loads_offline_with_its_fitted_operating_points():
    config = json.loads((MODELS / "disease-detector" / "config.json").read_text())
    assert "healthy_threshold" not in config  # no stale single threshold beside the operating points
    cascade = Cascade.from_pretrained()
    assert cascade.operating_points == config["operating_points"]  # read from the config, not a fallback
    assert Cascade.from_pretrained(operating_point="screening").thresholds() == config["operating_points"]["screening"]


@pytest.mark.parametrize("task", list(TASKS))
def test_each_shipped_onnx_export_matches_pytorch(task):
    import numpy as np
    from conftest import synthetic_slice

    from mri_cascade.loading import load_stage

    onnx, torch = load_stage(str(MODELS / task), task, "onnx"), load_stage(str(MODELS / task), task, "torch")
    assert (onnx.backend, torch.backend) == ("onnx", "torch")
    images = [synthetic_slice(i, lesion=i % 2 == 1).convert("RGB") for i in range(4)]
    pixels = onnx.preprocess(images)
    np.testing.assert_allclose(pixels, torch.preprocess(images))
    (onnx_logits, onnx_embedding), (torch_logits, torch_embedding) = onnx.run(pixels), torch.run(pixels)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-3)
    np.testing.assert_allclose(onnx_embedding, torch_embedding, atol=1e-3)


def fixed_test_sample() -> list[tuple[Path, str]]:
    """The first MRI test files by name of each test folder (the audited CT slices are left out)."""
    from mri_cascade.research.data import audited_non_mri

    sample = []
    for collection in ("alzheimer", "brain_tumor"):
        non_mri = audited_non_mri().get(collection, {})
        for class_dir in sorted((SHARED_DATA / collection / "test").iterdir()):
            files = [path for path in sorted(class_dir.glob("*.jpg"))
                     if f"test/{class_dir.name}/{path.name}" not in non_mri][:SAMPLE_PER_CLASS]
            sample.extend((path, label_id_from_source(class_dir.name)) for path in files)
    return sample


@pytest.mark.skipif(not (SHARED_DATA / "alzheimer" / "test").is_dir(), reason="real scans not present")
def test_the_shipped_cascade_reads_real_test_scans_above_the_floor():
    sample = fixed_test_sample()
    results = Cascade.from_pretrained().predict_batch([path for path, _ in sample])
    assert sum(result.refused for result in results) <= MAX_REFUSED
    assert all(result.label in LABEL_IDS for result in results if not result.refused)
    correct = sum(result.label == truth for result, (_, truth) in zip(results, sample))
    print(f"shipped cascade on {len(sample)} fixed test scans: {correct / len(sample):.3f}")
    assert correct / len(sample) >= ACCURACY_FLOOR


def test_the_shipped_cascade_refuses_every_held_out_non_mri_picture():
    from mri_cascade.research.probes import non_mri_images, other_brain_mri

    cascade = Cascade.from_pretrained()
    probes = non_mri_images(seed=1, scale=2)  # the held-out set of reports/familiarity.json: 332 of 332 refused
    results = cascade.predict_batch([image for _, image in probes])
    assert [category for (category, _), result in zip(probes, results) if not result.refused] == []
    assert not cascade.predict(other_brain_mri()).refused  # a brain MRI from another scanner is answered


@pytest.mark.skipif(not (SHARED_DATA / "alzheimer" / "test").is_dir(), reason="real scans not present")
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_a_real_scan_wrapped_as_dicom_gets_the_jpegs_answer(photometric):
    import numpy as np
    from conftest import dicom_bytes
    from PIL import Image

    cascade = Cascade.from_pretrained()
    for path, _ in fixed_test_sample()[::12]:  # one scan from each test folder
        grey = np.asarray(Image.open(path).convert("L"), dtype=np.uint16)
        stored = 255 - grey if photometric == "MONOCHROME1" else grey
        wrapped = dicom_bytes(stored, photometric=photometric, window=(128, 256), bits_stored=8)  # DICOM's identity
        from_jpeg, from_dicom = cascade.predict(path), cascade.predict(wrapped)
        assert from_dicom.label == from_jpeg.label
        assert from_dicom.probabilities == pytest.approx(from_jpeg.probabilities, abs=1e-4)


@pytest.mark.skipif(not (SHARED_DATA / "alzheimer" / "test").is_dir(), reason="real scans not present")
def test_real_slices_with_a_wide_border_or_mirrored_are_answered_like_the_originals():
    """A quarter of each side as black border, or a left-right mirror image, must not change the answer (the
    cascade crops to the head, the models were trained on both) nor turn it into a refusal."""
    from PIL import ImageOps

    from mri_cascade.research.benchmark import framed

    images = [Image.open(path).convert("RGB") for path, _ in fixed_test_sample()[::3]]  # 32 scans, 4 per folder
    cascade = Cascade.from_pretrained()
    given = cascade.predict_batch(images)
    answered = [index for index, result in enumerate(given) if not result.refused]
    for change in (framed, ImageOps.mirror):
        changed = cascade.predict_batch([change(images[index]) for index in answered])
        assert sum(result.refused for result in changed) <= FRAMING_MAX_NEW_REFUSALS
        same = sum(result.label == given[index].label for result, index in zip(changed, answered))
        print(f"{change.__name__}: {same} of {len(answered)} answered as the original")
        assert same / len(answered) >= FRAMING_SAME_ANSWER_FLOOR
