"""The ``mri-cascade`` command: evaluate the cascade, audit data, push models to the Hub."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def evaluate_command(args: argparse.Namespace) -> int:
    from .audit import duplicates_of_reference, fingerprint_dataset
    from .cards import render_model_card
    from .cascade import DEFAULT_MODELS, Cascade
    from .data import expand_sources, load_sources
    from .evaluation import evaluate_predictions, write_report
    from .labels import TASKS

    sources = expand_sources(args.data)
    splits = load_sources(sources)
    test = splits["test"]
    _, duplicates = duplicates_of_reference(fingerprint_dataset(test), fingerprint_dataset(splits["train"]))
    cascade = Cascade.from_pretrained(args.models, backend=args.backend)
    print(f"evaluating on {len(test)} test images ({int(duplicates.sum())} duplicate a training image) ...", flush=True)
    stage_probabilities = cascade.stage_probabilities(test["image"], batch_size=args.batch_size)
    predicted = [result.label for result in cascade.combine(stage_probabilities)]
    truth = test["label_id"]
    keep = ~duplicates
    report = {
        "models": str(args.models or DEFAULT_MODELS),
        "data": sources,
        "healthy_threshold": cascade.healthy_threshold,
        "full_test": evaluate_predictions(truth, stage_probabilities, predicted, cascade.healthy_threshold),
        "deduplicated_test": evaluate_predictions(
            [t for t, k in zip(truth, keep) if k],
            {task: p[keep] for task, p in stage_probabilities.items()},
            [p for p, k in zip(predicted, keep) if k],
            cascade.healthy_threshold,
        ),
    }
    write_report(report, Path(args.out))
    print_summary(report)
    if args.update_model_cards:
        models_dir = Path(args.models or DEFAULT_MODELS)
        for task in TASKS:
            figures = {
                variant: {k: v for k, v in report[f"{key}_test"]["models"][task].items() if k not in ("per_class", "confusion")}
                for variant, key in (("full", "full"), ("deduplicated", "deduplicated"))
            }
            (models_dir / task / "test_results.json").write_text(json.dumps(figures, indent=2))
            render_model_card(models_dir / task)
    return 0


def print_summary(report: dict) -> None:
    print(f"\n{'figure':<44}{'full test':>12}{'deduplicated':>14}")
    full, dedup = report["full_test"], report["deduplicated_test"]

    def row(name: str, a, b) -> None:
        cell = lambda v: "-" if v is None else f"{100 * v:.1f} %"  # noqa: E731
        print(f"{name:<44}{cell(a):>12}{cell(b):>14}")

    row("images", None, None)
    print(f"{'':<44}{full['images']:>12}{dedup['images']:>14}")
    row("disease detector accuracy (at threshold)", full["disease_detector_at_threshold"]["accuracy"],
        dedup["disease_detector_at_threshold"]["accuracy"])
    row("disease detector disease recall", full["disease_detector_at_threshold"]["disease_recall"],
        dedup["disease_detector_at_threshold"]["disease_recall"])
    for task in full["models"]:
        row(f"{task} accuracy (own images)", full["models"][task]["accuracy"],
            dedup["models"].get(task, {}).get("accuracy"))
    row("cascade end to end, 7 classes", full["cascade"]["accuracy"], dedup["cascade"]["accuracy"])


def collect_files(paths: list[str]) -> list[Path]:
    """Files named directly, and every non-hidden file under named folders (recursively), in a stable order."""
    files = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and not any(
                part.startswith(".") for part in p.relative_to(path).parts)))
        else:
            files.append(path)
    return files


def predict_command(args: argparse.Namespace) -> int:
    import csv

    from tqdm import tqdm

    from .cascade import Cascade
    from .images import ImageLoadError, load_series
    from .labels import LABEL_IDS

    cascade = Cascade.from_pretrained(args.models)
    files = collect_files(args.paths)
    if args.series_by == "folder":
        groups: dict[Path, list[Path]] = {}
        for path in files:
            groups.setdefault(path.parent, []).append(path)
        units = list(groups.items())
    else:
        units = [(path, [path]) for path in files]
    columns = ["path", "label", *LABEL_IDS, "slices", "refused", "reason"]
    answered = 0
    with open(args.out, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        for unit, members in tqdm(units, desc="classifying", unit="series" if args.series_by else "file"):
            row = {"path": str(unit), "refused": False, "reason": ""}
            slices, problems = [], []
            for member in members:
                try:
                    slices.extend(load_series(member))
                except ImageLoadError as error:
                    problems.append(str(error))
            if not slices:
                row.update(refused=True, reason="; ".join(problems) or "no files")
            else:
                result = cascade.predict_series(slices) if len(slices) > 1 else cascade.predict(slices[0])
                row.update(label=result.label, slices=len(slices), reason="; ".join(problems),
                           **{label: f"{result.probabilities[label]:.6f}" for label in LABEL_IDS})
                answered += 1
            writer.writerow(row)
    print(f"{answered} of {len(units)} {'series' if args.series_by else 'files'} classified -> {args.out}")
    return 0 if answered else 1


def audit_command(args: argparse.Namespace) -> int:
    from .audit import fingerprint_dataset
    from .data import expand_sources, load_sources
    from .evaluation import audit_report, print_audit

    splits = load_sources(expand_sources(args.data))
    audit = audit_report(splits, fingerprint_dataset(splits["train"]), fingerprint_dataset(splits["test"]))
    print_audit(audit)
    if args.out:
        Path(args.out).write_text(json.dumps(audit, indent=2))
    return 0


def push_command(args: argparse.Namespace) -> int:
    from huggingface_hub import create_repo, upload_folder

    from .cards import render_model_card
    from .cascade import DEFAULT_MODELS
    from .labels import TASKS

    models_dir = Path(args.models or DEFAULT_MODELS)
    for task in TASKS:
        repo_id = f"{args.namespace}/{args.prefix}-{task}"
        render_model_card(models_dir / task, namespace=args.namespace)
        create_repo(repo_id, exist_ok=True, private=args.private)
        upload_folder(repo_id=repo_id, folder_path=str(models_dir / task), commit_message="Upload MRI Cascade model")
        print(f"pushed {models_dir / task} -> {repo_id}")
    return 0


def calibrate_command(args: argparse.Namespace) -> int:
    from .calibration import TEMPERATURE_KEY, expected_calibration_error, fit_temperature, reliability_diagram, softmax
    from .cascade import DEFAULT_MODELS, Cascade
    from .data import carve_validation, expand_sources, load_sources
    from .evaluation import tune_healthy_threshold
    from .labels import LABEL_IDS, TASKS

    models_dir = Path(args.models or DEFAULT_MODELS)
    splits = load_sources(expand_sources(args.data))
    _, validation = carve_validation(splits["train"], args.validation_fraction, args.seed)
    cascade = Cascade.from_pretrained(models_dir, backend="auto")
    print(f"fitting temperatures on {len(validation)} validation images ...", flush=True)
    validation_logits = cascade.stage_logits(validation["image"])
    test_logits = cascade.stage_logits(splits["test"]["image"])
    truth = np.asarray(validation["label_id"])
    test_truth = np.asarray(splits["test"]["label_id"])
    temperatures, figures = {}, {}
    for task_name, task in TASKS.items():
        members = np.isin(truth, task.members())
        labels = np.array([task.classes.index(task.class_of[t]) for t in truth[members]])
        temperatures[task_name] = fit_temperature(validation_logits[task_name][members], labels)
        test_members = np.isin(test_truth, task.members())
        test_labels = np.array([task.classes.index(task.class_of[t]) for t in test_truth[test_members]])
        figures[task_name] = {"temperature": temperatures[task_name]}
        for name, temperature in (("before", 1.0), ("after", temperatures[task_name])):
            probabilities = softmax(test_logits[task_name][test_members], temperature)
            figures[task_name][f"test_ece_{name}"] = expected_calibration_error(
                probabilities.max(axis=1), probabilities.argmax(axis=1) == test_labels)
    detector_results = json.loads((models_dir / "disease-detector" / "validation_results.json").read_text())
    target = detector_results.get("healthy_threshold", {}).get("target_disease_recall", 0.97)
    calibrated_healthy = softmax(validation_logits["disease-detector"], temperatures["disease-detector"])[:, 0]
    threshold = tune_healthy_threshold(calibrated_healthy, truth == "healthy", target)
    curves, end_to_end = {}, {}
    for name, temps, cut in (("before", dict.fromkeys(TASKS, 1.0), cascade.healthy_threshold),
                             ("after", temperatures, threshold["threshold"])):
        cascade.healthy_threshold = cut
        results = cascade.combine({t: softmax(test_logits[t], temps[t]) for t in TASKS})
        confidence = np.array([r.probabilities[r.label] for r in results])
        correct = np.array([r.label == t for r, t in zip(results, test_truth)])
        curves[f"{name} scaling"] = (confidence, correct)
        end_to_end[name] = {"ece": expected_calibration_error(confidence, correct), "accuracy": float(correct.mean()),
                            "healthy_threshold": cut}
    for task_name in TASKS:
        config_path = models_dir / task_name / "config.json"
        config = json.loads(config_path.read_text())
        config[TEMPERATURE_KEY] = temperatures[task_name]
        if task_name == "disease-detector":
            config["healthy_threshold"] = threshold["threshold"]
            figures[task_name]["healthy_threshold"] = threshold
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (models_dir / task_name / "calibration.json").write_text(json.dumps(figures[task_name], indent=2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reliability_diagram(curves, out / "reliability_cascade.png")
    report = {"models": figures, "cascade_end_to_end": end_to_end, "labels": list(LABEL_IDS)}
    (out / "calibration.json").write_text(json.dumps(report, indent=2))
    for task_name, task_figures in figures.items():
        print(f"{task_name:<20} T={task_figures['temperature']:.3f}  test ECE {task_figures['test_ece_before']:.3f}"
              f" -> {task_figures['test_ece_after']:.3f}")
    print(f"cascade end to end: ECE {end_to_end['before']['ece']:.3f} -> {end_to_end['after']['ece']:.3f}, "
          f"accuracy {end_to_end['before']['accuracy']:.3f} -> {end_to_end['after']['accuracy']:.3f}, "
          f"healthy threshold {end_to_end['before']['healthy_threshold']:.4f} -> {threshold['threshold']:.4f}")
    return 0


def export_onnx_command(args: argparse.Namespace) -> int:
    from .cascade import DEFAULT_MODELS
    from .labels import TASKS
    from .runtime import export_onnx

    models_dir = Path(args.models or DEFAULT_MODELS)
    for task in TASKS:
        print(f"exported {export_onnx(models_dir / task)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mri-cascade", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    evaluate = commands.add_parser("evaluate", help="Run every model and the cascade on the test splits.")
    evaluate.add_argument("data", nargs="+", help="Collection roots, a folder of them (../shared/data) or Hub ids.")
    evaluate.add_argument("--models", default=None, help="Models directory or Hub prefix (default: the shipped models/).")
    evaluate.add_argument("--out", default="reports", help="Where evaluation.json and the PNGs go.")
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto")
    evaluate.add_argument("--update-model-cards", action="store_true",
                          help="Write test_results.json into each model folder and re-render its card.")
    evaluate.set_defaults(run=evaluate_command)

    predict = commands.add_parser("predict", help="Classify files and folders (recursively) into a CSV.")
    predict.add_argument("paths", nargs="+", help="Image, DICOM or NIfTI files, or folders of them.")
    predict.add_argument("--out", default="results.csv")
    predict.add_argument("--models", default=None)
    predict.add_argument("--series-by", choices=["folder"], default=None,
                         help="'folder': one patient answer per folder, pooling its slices.")
    predict.set_defaults(run=predict_command)

    audit = commands.add_parser("audit", help="Count exact and near-duplicate images within and across splits.")
    audit.add_argument("data", nargs="+")
    audit.add_argument("--out", default=None, help="Write the audit as JSON here.")
    audit.set_defaults(run=audit_command)

    calibrate = commands.add_parser("calibrate", help="Fit each model's temperature on validation data; report ECE.")
    calibrate.add_argument("data", nargs="+")
    calibrate.add_argument("--models", default=None)
    calibrate.add_argument("--out", default="reports")
    calibrate.add_argument("--validation-fraction", type=float, default=0.15)
    calibrate.add_argument("--seed", type=int, default=42)
    calibrate.set_defaults(run=calibrate_command)

    export = commands.add_parser("export-onnx", help="Write onnx/model.onnx into each model folder (ONNX Runtime).")
    export.add_argument("--models", default=None)
    export.set_defaults(run=export_onnx_command)

    push = commands.add_parser("push-to-hub", help="Upload the four models to <namespace>/<prefix>-<task>.")
    push.add_argument("namespace")
    push.add_argument("--prefix", default="mri")
    push.add_argument("--models", default=None)
    push.add_argument("--private", action="store_true")
    push.set_defaults(run=push_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError) as error:
        print(f"mri-cascade: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
