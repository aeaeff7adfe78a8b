"""Classify brain MRI slices, series and volumes (``mri-cascade predict``): Alzheimer's disease and how severe, a
brain tumor and which type, or neither. The research commands measure the cascade (benchmark, evaluate, audit),
fit it (calibrate, keep-fold-logits, fit-familiarity) and publish it (export-onnx, push-to-hub)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .loading import ModelLoadError  # already imported with the package


def local_models(given: str | None) -> Path:
    """The models directory a research command reads and writes: ``--models``, else the checkout's models/."""
    from .loading import DEFAULT_MODELS

    path = Path(given or DEFAULT_MODELS)
    if not path.is_dir():
        raise SystemExit(f"mri-cascade: {path} is not a models directory; give --models DIR (a folder holding the "
                         "four model folders)")
    return path


def evaluate_command(args: argparse.Namespace) -> int:
    from datasets import DatasetDict

    from .cascade import Cascade
    from .labels import TASKS
    from .research.cards import render_model_card
    from .research.data import expand_sources, load_sources, only_mri, only_non_mri, report_path
    from .research.evaluation import evaluate_cascade, report_name, test_results_of, write_report
    from .research.fitting import stored_validation_figures, unseen_subject_models

    sources = expand_sources(args.data)
    cascade = Cascade.from_pretrained(args.models, backend=args.backend, operating_point=args.operating_point)
    validation = stored_validation_figures(cascade, cascade.operating_point)
    everything = load_sources(sources, non_mri=True)
    report = evaluate_cascade(cascade, DatasetDict({split: only_mri(d) for split, d in everything.items()}),
                              args.batch_size, validation=validation,
                              held_out=unseen_subject_models(cascade, sources, args.fold_models),
                              non_mri_test=only_non_mri(everything["test"]))
    report.update(models=report_path(args.models) if args.models else "models/ (shipped)",
                  data=[report_path(source) for source in sources])
    write_report(report, Path(args.out))
    unseen = report.get("unseen_subjects_test")
    print(f"{report['full_test']['images']} test images, {report['test_images_duplicating_train']} of them "
          f"duplicating a training image"
          + (f", {unseen['images']} of subjects the models answering them never saw (held out by folds "
             f"{', '.join(map(str, unseen['folds']))}, or linked to no training image)" if unseen else "")
          + f"; operating point {report['operating_point']}: healthy iff P(healthy) > "
          + ", ".join(f"{family} {t:.4f}" for family, t in report["healthy_thresholds"].items()))
    print_summary(report)
    if "non_mri_test" in report:
        row = report["non_mri_test"]
        print(f"non-MRI in the test split (CT, by the modality audit): refused {row['refused']} of {row['images']}"
              + (f"; answered {row['answered']}" if row["answered"] else ""))
    print(f"-> {Path(args.out) / report_name(report['operating_point'])}")
    if args.update_model_cards:
        models_dir = local_models(args.models)
        for task in TASKS:
            (models_dir / task / "test_results.json").write_text(json.dumps(test_results_of(report, task), indent=2))
            render_model_card(models_dir / task)
    return 0


def benchmark_command(args: argparse.Namespace) -> int:
    from .research.benchmark import run_benchmark
    from .research.data import expand_sources

    models = str(args.models or local_models(None))
    report = run_benchmark(models, expand_sources(args.data), args.batch_size, args.fold_models)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(report, indent=2))
    print_benchmark(report)
    if args.update_model_cards:
        from .labels import TASKS
        from .research.cards import BENCHMARK_FILE, render_model_card

        models_dir = local_models(args.models)
        for task in TASKS:
            (models_dir / task / BENCHMARK_FILE).write_text(json.dumps(report, indent=2))
            render_model_card(models_dir / task)
    print(f"-> {out / 'benchmark.json'}")
    return 0


def explain_benchmark_command(args: argparse.Namespace) -> int:
    from .research.explanation_benchmark import print_explanation_benchmark, run_explanation_benchmark

    (data,) = args.data
    report = run_explanation_benchmark(str(args.models or local_models(None)), data, args.part, args.methods,
                                       args.limit_per_source, args.sanity_every, args.alzheimer_slices)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"explanation_benchmark_{args.part}.json"
    (out / name).write_text(json.dumps(report, indent=2))
    print_explanation_benchmark(report)
    print(f"-> {out / name}")
    return 0


def print_benchmark(report: dict) -> None:
    from .research.cards import card_benchmark

    folds = ", ".join(f"{fold} ({row['images']})" for fold, row in report["folds"].items())
    print(f"benchmark: out of fold over folds {folds}, {report['images']} scans in {report['clusters']} subjects or "
          "clusters; thresholds cross-fitted over two halves of them; 95 % CI")
    print("Alzheimer detector AUC by fold: " + ", ".join(
        f"{fold} {auc:.3f}" for fold, auc in report["alzheimer_detector_auc_by_fold"].items() if auc is not None))
    columns = ("end_to_end", "disease_recall", "healthy_kept", "detector_auc")
    for point in ("balanced", "screening"):
        table = card_benchmark(report, point)
        print(f"\n{point}: {'':<50}" + "".join(f"{column.replace('_', ' '):>24}" for column in columns))
        for name, figures in table["rows"]:
            print(f"  {name:<58}" + "".join(f"{figures[column]:>24}" for column in columns))
    print(f"\ntumor type: {card_benchmark(report)['tumor_type']}")
    framing = report["framing"]
    if framing.get("trained_on"):
        print(f"framing: on fold {framing['fold']}, which these models trained on")
    for change in ("border", "mirrored"):
        row = framing[change]
        print(f"{change}: refused {row['refused']} of {framing['images']}; same answer as the original "
              f"{row['same_answer']} of {row['originals_answered']}")
    baselines = report.get("alzheimer_baselines")
    if baselines:
        print(f"\nAlzheimer's, {baselines['subjects']} subjects ({baselines['demented']} demented), AUC of demented "
              "against healthy, 95 % CI over subjects:")
        for name in ("detector_auc", "dark_share_auc", "histogram_regression_auc", "detector_margin_over_dark_share",
                     "detector_margin_over_histogram_regression"):
            row = baselines[name]
            print(f"  {name.replace('_', ' '):<44} {row['value']:+.3f} ({row['low']:+.3f} to {row['high']:+.3f})")
    for point, stability in report.get("series_threshold_stability", {}).items():
        print(stability_line(point, stability))
    severity = report.get("alzheimer_severity")
    if severity:
        print(f"\nseverity, {severity['subjects']} subjects with dementia: " + "; ".join(
            f"{name.replace('_', ' ')} {row['value']:.3f} ({row['low']:.3f}-{row['high']:.3f})"
            for name, row in severity.items() if isinstance(row, dict) and "low" in row and row["low"] is not None))


def stability_line(point: str, stability: dict) -> str:
    """One line of ``benchmark.series_threshold_stability``: the threshold fitted on every subject and its figures,
    then each spread's 5th-95th percentiles."""
    fitted = stability["fitted_on_every_subject"]
    return (f"{point} series threshold {fitted['threshold']:.3f} on {stability['subjects']} Alzheimer-family subjects "
            f"(disease recall {fitted['disease_recall']:.3f}, healthy kept {fitted['healthy_kept']:.3f}); refitted on "
            f"{stability['resamples']} bootstrap resamples (5th-95th percentiles): "
            + "; ".join(f"{name.replace('_', ' ')} {row['p5']:.3f}-{row['p95']:.3f} (median {row['median']:.3f})"
                        for name, row in stability.items() if isinstance(row, dict) and "p5" in row))


def print_summary(report: dict) -> None:
    """The headline figures side by side: full test, deduplicated test, test scans of unseen subjects (when the
    report has them) and validation."""
    columns = {"full test": "full_test", "deduplicated": "deduplicated_test", "unseen subjects": "unseen_subjects_test",
               "validation": "validation"}
    sets = {title: report[key] for title, key in columns.items() if key in report}
    widths = [max(12, len(title) + 2) for title in sets]
    print(f"\n{'figure':<48}" + "".join(f"{title:>{w}}" for title, w in zip(sets, widths)))
    print(f"{'images':<48}" + "".join(f"{figures['images']:>{w}}" for figures, w in zip(sets.values(), widths)))

    def row(name: str, pick) -> None:
        cells = []
        for figures in sets.values():
            try:
                value = pick(figures)
            except KeyError:
                value = None
            cells.append("-" if value is None else f"{100 * value:.1f} %")
        print(f"{name:<48}" + "".join(f"{cell:>{w}}" for cell, w in zip(cells, widths)))

    row("cascade end to end, 7 classes", lambda f: f["cascade"]["accuracy"])
    row("disease detector accuracy (at threshold)", lambda f: f["disease_detector_at_threshold"]["accuracy"])
    row("disease recall", lambda f: f["disease_detector_at_threshold"]["disease_recall"])
    row("healthy scans called healthy", lambda f: f["disease_detector_at_threshold"]["healthy_recall"])
    for family in report["healthy_thresholds"]:
        per_family = lambda f, family=family: f["disease_detector_at_threshold"]["per_family"][family]  # noqa: E731
        row(f"  {family} family: disease recall", lambda f, p=per_family: p(f)["disease_recall"])
        row(f"  {family} family: healthy called healthy", lambda f, p=per_family: p(f)["healthy_kept"])
    for task in report["full_test"]["models"]:
        row(f"{task} accuracy (own images)", lambda f, task=task: f["models"][task]["accuracy"])
    row("end-to-end calibration error (ECE, 15 bins)", lambda f: f["cascade"]["ece"])


def predict_command(args: argparse.Namespace) -> int:
    from .batch import PREDICTION_COLUMNS, csv_cell, predict_unit, prediction_units

    units = prediction_units(args.paths, args.series_by)
    if args.engine == "ray":
        from .ray_engine import predict_on_ray

        summary = predict_on_ray(units, args.models, args.out, args.operating_point, args.address,
                                 args.cpus_per_worker, args.batch_size)
        for path, reason in summary["unanswered"]:
            print(unanswered_line(path, reason), file=sys.stderr)
        print(f"{summary['answered']} of {summary['rows']} {'series' if args.series_by else 'files'} answered "
              f"({summary['skipped']} already in {args.out}) -> {args.out}")
        return 0 if summary["answered"] or not summary["rows"] else 1
    import csv

    from tqdm import tqdm

    from .cascade import Cascade

    cascade = Cascade.from_pretrained(args.models, operating_point=args.operating_point)
    answered = 0
    with open(args.out, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=PREDICTION_COLUMNS)
        writer.writeheader()
        for unit, members in tqdm(units, desc="classifying", unit="series" if args.series_by else "file"):
            row = predict_unit(cascade, unit, members)
            answered += not row["refused"]
            if row["refused"]:
                tqdm.write(unanswered_line(unit, row["reason"]), file=sys.stderr)
            writer.writerow({column: csv_cell(row[column]) for column in PREDICTION_COLUMNS})
    print(f"{answered} of {len(units)} {'series' if args.series_by else 'files'} answered -> {args.out}")
    return 0 if answered else 1


def unanswered_line(path: str, reason: str) -> str:
    """The line the terminal gets for a file or series without an answer: the path as given, and why."""
    return f"not answered: {path}: {reason}"


def audit_command(args: argparse.Namespace) -> int:
    from datasets import DatasetDict

    from .research.audit import fingerprint_dataset
    from .research.data import expand_sources, load_sources, only_mri
    from .research.evaluation import audit_report, modality_counts, print_audit

    everything = load_sources(expand_sources(args.data), non_mri=True)
    splits = DatasetDict({split: only_mri(dataset) for split, dataset in everything.items()})
    audit = audit_report(splits, fingerprint_dataset(splits["train"]), fingerprint_dataset(splits["test"]),
                         modality_counts(everything))
    print_audit(audit)
    if args.out:
        Path(args.out).write_text(json.dumps(audit, indent=2))
    return 0


def push_command(args: argparse.Namespace) -> int:
    from .labels import TASKS
    from .research.cards import publish_model

    models_dir = local_models(args.models)
    for task in TASKS:
        repo_id = publish_model(models_dir / task, f"{args.namespace}/{args.prefix}", private=args.private)
        print(f"pushed {models_dir / task} -> {repo_id}")
    return 0


def calibrate_command(args: argparse.Namespace) -> int:
    from .research.data import expand_sources, load_sources
    from .research.fitting import calibrate_models

    splits = load_sources(expand_sources(args.data))
    report = calibrate_models(local_models(args.models), splits, Path(args.out),
                              args.validation_fraction, args.seed, args.test_time_flips, args.fold_models)
    # only held-out figures: the test ones (ECE, accuracy) stay in the JSON report, for the model cards; printing
    # them here would show them to whoever is still choosing a model (`mri-cascade evaluate` is for test figures)
    for task_name, figures in report["models"].items():
        print(f"{task_name:<20} T={figures['temperature']:.3f}, fitted on folds {figures['folds']} "
              f"({figures['held_out_images']} images, accuracy {100 * figures['held_out_accuracy']:.1f} %)")
    fitted = report["operating_points"]
    for point, thresholds in fitted["operating_points"].items():
        figures = fitted["validation"][point]
        print(f"{point:<10} healthy iff P(healthy) > " + ", ".join(f"{f} {t:.4f}" for f, t in thresholds.items())
              + f"; validation end to end {100 * figures['all']['end_to_end_accuracy']:.1f} %, disease recall "
              + ", ".join(f"{f} {100 * figures[f]['disease_recall']:.1f} %" for f in thresholds))
    series = report["series_operating_points"] or {"operating_points": {}}
    for point, thresholds in series["operating_points"].items():
        figures = series["validation"][point]["alzheimer"]
        print(f"{point:<10} series of Alzheimer's family: healthy iff pooled P(healthy) > {thresholds['alzheimer']:.4f}; "
              f"{series['validation_subjects']} validation subjects, end to end "
              f"{100 * figures['end_to_end_accuracy']:.1f} %, disease recall {100 * figures['disease_recall']:.1f} %")
    return 0


def keep_fold_logits_command(args: argparse.Namespace) -> int:
    from .research.data import expand_sources, load_sources
    from .research.fitting import keep_fold_logits

    splits = load_sources(expand_sources(args.data))
    kept = keep_fold_logits(local_models(args.models), Path(args.fold_models), splits, args.batch_size,
                            args.validation_fraction, args.seed)
    kept.save(args.out)
    print(f"fold {kept.fold}: logits of {', '.join(kept.tasks)} on {len(kept.keys)} scans -> {args.out}")
    return 0


def familiarity_command(args: argparse.Namespace) -> int:
    from .research.ct_probes import HEAD_CT_FOLDER
    from .research.data import expand_sources, load_sources
    from .research.refusal_fit import fit_and_report

    head_ct = args.head_ct or next((str(Path(d) / HEAD_CT_FOLDER) for d in args.data
                                    if (Path(d) / HEAD_CT_FOLDER).is_dir()), None)
    splits = load_sources(expand_sources(args.data), non_mri=True)
    report = fit_and_report(local_models(args.models), splits, Path(args.out), args.validation_fraction,
                            args.seed, args.components, head_ct, args.cache)
    print(f"limit {report['limit']:.4f} from {report['validation']['images']} validation scans; CT test limit "
          f"P(head CT) > {report['ct_limit']:.4f}, learned from {report['ct_training_images']} head CT pictures")
    for name in ("validation", "test", "non_mri_development", "non_mri_held_out", "non_brain_medical_development",
                 "non_brain_medical_held_out", "ct_development", "ct_held_out", "head_ct", "head_ct_bleeds"):
        if name in report:
            figures = report[name]
            print(f"{name:<30} refused {figures['refused']:>4} of {figures['images']:>5} "
                  f"({100 * figures['refused_share']:.2f} %)  least unfamiliarity {figures['least_unfamiliarity']:.2f}")
    print(f"other brain MRI (matplotlib sample): unfamiliarity {report['other_brain_mri']['unfamiliarity']:.2f}")
    for fold, figures in report.get("ct_leave_one_source_out", {}).items():
        print(f"\nCT test, {fold} (learned from {figures['ct_training_images']}, limit {figures['limit']:.4f}):")
        for kind in ("unseen_ct", "unseen_ct_whole_check", "mri"):
            for name, row in figures.get(kind, {}).items():
                label = name + (" (whole check)" if kind == "unseen_ct_whole_check" else "")
                print(f"  {label:<52} refused {row['refused']:>4} of {row['images']:>5} ({100 * row['share']:.2f} %, "
                      f"95 % CI {100 * row['low']:.2f}-{100 * row['high']:.2f})")
    return 0


def export_onnx_command(args: argparse.Namespace) -> int:
    from .labels import TASKS
    from .torch_backend import export_onnx

    models_dir = local_models(args.models)
    for task in TASKS:
        print(f"exported {export_onnx(models_dir / task)}")
    return 0


def add_operating_point(command: argparse.ArgumentParser) -> None:
    from .decisions import DEFAULT_OPERATING_POINT, OPERATING_POINTS

    command.add_argument("--operating-point", choices=OPERATING_POINTS, default=DEFAULT_OPERATING_POINT,
                         help="balanced: best end-to-end accuracy (default); screening: >= 95 %% disease recall in "
                         "each scan family on validation, so fewer missed diseases and more false alarms.")


DATA_HELP = "Collection roots (<root>/<split>/<class>/*), a folder of them (../shared/data) or Hub ids, in any order."
MODELS_HELP = "Models directory or Hub prefix (default: $MRI_CASCADE_MODELS, else the checkout's models/)."
LOCAL_MODELS_HELP = "Models directory, read and written (default: the checkout's models/)."
FRACTION_HELP = "Share of train in each grouped validation fold (run_train.py --validation_fraction)."


def build_parser() -> argparse.ArgumentParser:
    from .research.data import SPLIT_SEED, VALIDATION_FRACTION

    parser = argparse.ArgumentParser(prog="mri-cascade", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser(
        "predict", help="Classify files and folders (recursively) into a CSV; exit code 1 when nothing got an answer.")
    predict.add_argument("paths", nargs="+", help="Image, DICOM or NIfTI files, folders of them, or a manifest "
                         "(.csv or .parquet with a 'path' column).")
    predict.add_argument("--out", default="results.csv", help="The plain engine writes CSV; the Ray engine a Parquet "
                         "dataset (a folder; CSV when the name ends in .csv), which a restart with the same --out "
                         "completes.")
    predict.add_argument("--engine", choices=["local", "ray"], default="local",
                         help="'ray': Ray Data over a local or remote cluster (pip install -r requirements-ray.txt).")
    predict.add_argument("--address", default=None, help="Ray: a running cluster's address, or 'auto'; none starts "
                         "a local instance.")
    predict.add_argument("--cpus-per-worker", type=float, default=None,
                         help="Ray: CPUs each model worker claims (default: a local instance's CPUs less half a "
                         "core, so read tasks never wait; on a cluster 2).")
    predict.add_argument("--batch-size", type=int, default=32, help="Ray: files per batch.")
    predict.add_argument("--models", default=None, help=MODELS_HELP)
    predict.add_argument("--series-by", choices=["folder"], default=None,
                         help="'folder': one patient answer per folder, pooling its slices.")
    add_operating_point(predict)
    predict.set_defaults(run=predict_command)

    evaluate = commands.add_parser("evaluate", help="Run every model and the cascade on the test splits.")
    evaluate.add_argument("data", nargs="+", help=DATA_HELP)
    evaluate.add_argument("--models", default=None, help=MODELS_HELP)
    evaluate.add_argument("--out", default="reports", help="Where evaluation_<operating point>.json and the PNGs go.")
    evaluate.add_argument("--batch-size", type=int, default=8, help="Scans per model run.")
    evaluate.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto",
                          help="auto: ONNX Runtime where a fresh export exists, else PyTorch.")
    add_operating_point(evaluate)
    evaluate.add_argument("--update-model-cards", action="store_true",
                          help="Write test_results.json into each model folder and re-render its card.")
    evaluate.add_argument("--fold-models", nargs="*", default=[], metavar="DIR|FILE",
                          help="run_train.py output folders of the same recipes holding out other folds, or their kept "
                          "logits (keep-fold-logits): they answer the test scans of the subjects they never saw, for "
                          "the unseen-subjects figures.")
    evaluate.set_defaults(run=evaluate_command)

    benchmark = commands.add_parser(
        "benchmark", help="What a new patient gets: every figure out of fold (the fold the shipped models held out, "
        "and those --fold-models held out), by slice, by subject and by source, with 95 %% intervals (the source of "
        "truth for model choices).")
    benchmark.add_argument("data", nargs="+", help=DATA_HELP)
    benchmark.add_argument("--models", default=None, help=MODELS_HELP)
    benchmark.add_argument("--out", default="reports", help="Where benchmark.json goes.")
    benchmark.add_argument("--batch-size", type=int, default=16, help="Scans per model run.")
    benchmark.add_argument("--update-model-cards", action="store_true",
                           help="Copy the figures beside each model and render its card with them.")
    benchmark.add_argument("--fold-models", nargs="*", default=[], metavar="DIR|FILE",
                           help="Output folders of the shipped recipe holding out other folds (train/ship.sh with "
                           "FOLD=K), or their kept logits (keep-fold-logits): they answer those folds' scans.")
    benchmark.set_defaults(run=benchmark_command)

    explain = commands.add_parser(
        "explain-benchmark", help="Does the heatmap point at the evidence? Pointing game, mass in box, deletion and "
        "the randomisation sanity test on tumors with known boxes (tumor_boxes), per source, with 95 %% intervals.")
    explain.add_argument("data", nargs=1, help="The folder holding tumor_boxes/, br35h/ and alzheimer/ (../shared/data).")
    explain.add_argument("--models", default=None, help=MODELS_HELP)
    explain.add_argument("--out", default="reports", help="Where explanation_benchmark_<part>.json goes.")
    explain.add_argument("--part", choices=["reporting", "choosing"], default="reporting",
                         help="The slices the figures are reported on (default), or those methods are chosen on.")
    explain.add_argument("--methods", nargs="*", default=None, help="Methods to score (default: the shipped one and "
                         "Grad-CAM of the deciding model, the one before it).")
    explain.add_argument("--limit-per-source", type=int, default=None, help="At most this many slices per source.")
    explain.add_argument("--sanity-every", type=int, default=1, help="Run the randomisation test on every N-th slice.")
    explain.add_argument("--alzheimer-slices", type=int, default=30,
                         help="Alzheimer answers whose maps are checked for mass inside the head and sanity.")
    explain.set_defaults(run=explain_benchmark_command)



    audit = commands.add_parser("audit", help="Count exact and near-duplicate images within and across splits, and "
                                "the images the modality audit lists as non-MRI.")
    audit.add_argument("data", nargs="+", help=DATA_HELP)
    audit.add_argument("--out", default=None, help="Write the audit as JSON here.")
    audit.set_defaults(run=audit_command)

    calibrate = commands.add_parser("calibrate", help="Fit each model's temperature on validation data; report ECE.")
    calibrate.add_argument("data", nargs="+", help=DATA_HELP)
    calibrate.add_argument("--models", default=None, help=LOCAL_MODELS_HELP)
    calibrate.add_argument("--out", default="reports", help="Where calibration.json goes.")
    calibrate.add_argument("--validation-fraction", type=float, default=VALIDATION_FRACTION, help=FRACTION_HELP)
    calibrate.add_argument("--seed", type=int, default=SPLIT_SEED, help="the folds' seed (run_train.py --split_seed)")
    calibrate.add_argument("--test-time-flips", nargs="*", default=None, metavar="TASK",
                           help="Models whose logits the cascade averages over each image and its mirror image "
                           "(the others are switched off); not given: keep the configs' setting.")
    calibrate.add_argument("--fold-models", nargs="*", default=[], metavar="DIR|FILE",
                           help="run_train.py output folders of models that held out other folds (--validation_fold K), "
                           "or their kept logits (keep-fold-logits): temperatures and operating points are fitted on "
                           "those folds too.")
    calibrate.set_defaults(run=calibrate_command)

    keep = commands.add_parser(
        "keep-fold-logits", help="Keep one fold's models' logits on the scans they held out and on the test split in "
        "a small file that --fold-models takes in place of the models (train/ship.sh with FOLD=K writes it).")
    keep.add_argument("data", nargs="+", help=DATA_HELP)
    keep.add_argument("--models", default=None, help="The shipped models, whose recipe and test-time flips the "
                      "fold's models must share.")
    keep.add_argument("--fold-models", required=True, metavar="DIR", help="One fold's run_train.py output folders.")
    keep.add_argument("--out", required=True, help="The file to write (reports/fold_logits/foldK.npz).")
    keep.add_argument("--batch-size", type=int, default=16, help="Scans per model run.")
    keep.add_argument("--validation-fraction", type=float, default=VALIDATION_FRACTION, help=FRACTION_HELP)
    keep.add_argument("--seed", type=int, default=SPLIT_SEED, help="the folds' seed (run_train.py --split_seed)")
    keep.set_defaults(run=keep_fold_logits_command)

    familiarity = commands.add_parser(
        "fit-familiarity", help="Fit the check that refuses non-MRI input; report refusal rates.")
    familiarity.add_argument("data", nargs="+", help=DATA_HELP)
    familiarity.add_argument("--models", default=None, help=LOCAL_MODELS_HELP)
    familiarity.add_argument("--out", default="reports", help="Where familiarity.json and its plot go.")
    familiarity.add_argument("--validation-fraction", type=float, default=VALIDATION_FRACTION, help=FRACTION_HELP)
    familiarity.add_argument("--seed", type=int, default=SPLIT_SEED, help="the folds' seed (run_train.py --split_seed)")
    familiarity.add_argument("--components", type=int, default=128,
                             help="Principal components of the embeddings that the check models.")
    familiarity.add_argument("--head-ct", default=None, metavar="DIR",
                             help="Head CT (normal/ and stroke/ of <series>-<n>.jpg) the CT test learns from and is "
                             "judged on, leave one source out (default: head_ct/ inside a data folder given).")
    familiarity.add_argument("--cache", default=None, metavar="DIR",
                             help="Keep each image set's embeddings here, and read them back on a later run with the "
                             "same weights and seed (a re-fit then runs no model).")
    familiarity.set_defaults(run=familiarity_command)

    export = commands.add_parser("export-onnx", help="Write onnx/model.onnx into each model folder (ONNX Runtime).")
    export.add_argument("--models", default=None, help=LOCAL_MODELS_HELP)
    export.set_defaults(run=export_onnx_command)

    push = commands.add_parser("push-to-hub", help="Upload the four models to <namespace>/<prefix>-<task>.")
    push.add_argument("namespace", help="The Hub user or organisation that gets the four repos.")
    push.add_argument("--prefix", default="mri", help="Repo names are <prefix>-<task>.")
    push.add_argument("--models", default=None, help=LOCAL_MODELS_HELP)
    push.add_argument("--private", action="store_true", help="Create the repos private.")
    push.set_defaults(run=push_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError, ModelLoadError) as error:
        print(f"mri-cascade: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
