"""What pooling k slices of one patient does to accuracy, against single slices, on the official test splits.

    python benchmarks/series_accuracy.py            # prints the table, writes reports/series_accuracy.json

The test splits carry no patient ids, so patients are approximated by near-duplicate clusters of the test
images (thumbnail cosine similarity >= 0.99: on the Alzheimer split these are the slices of one scan).
Series of k slices are drawn from one cluster; the cascade pools them with ``pool_series``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mri_cascade import Cascade  # noqa: E402
from mri_cascade.audit import fingerprint_dataset, near_duplicate_groups  # noqa: E402
from mri_cascade.cascade import pool_series  # noqa: E402
from mri_cascade.data import expand_sources, load_source  # noqa: E402


def series_accuracy(cascade: Cascade, probabilities: dict, truth: np.ndarray, groups: np.ndarray, k: int,
                    draws_per_group: int, rng: np.random.Generator) -> tuple[float, int]:
    correct = total = 0
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        if len(members) < max(k, 1) or len(set(truth[members])) != 1:
            continue
        for _ in range(draws_per_group if 1 < k < len(members) else 1):
            chosen = members if k in (0, 1) else rng.choice(members, size=k, replace=False)
            for subset in ([[m] for m in chosen] if k == 1 else [chosen]):
                pooled = pool_series({task: p[subset] for task, p in probabilities.items()})
                (result,) = cascade.combine(pooled)
                correct += result.label == truth[subset[0]]
                total += 1
    return (correct / total if total else float("nan")), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 5, 0], help="slices per series; 0: the whole cluster")
    parser.add_argument("--draws-per-group", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "series_accuracy.json")
    args = parser.parse_args()
    cascade = Cascade.from_pretrained()
    report = {}
    for source in expand_sources([args.data]):
        test = load_source(source)["test"]
        groups = near_duplicate_groups(fingerprint_dataset(test).thumbnails)
        truth = np.asarray(test["label_id"])
        probabilities = cascade.stage_probabilities(test["image"])
        name = Path(source).name
        sizes = np.unique(groups, return_counts=True)[1]
        report[name] = {"images": len(test), "clusters": len(sizes), "median_cluster_size": float(np.median(sizes)),
                        "by_k": {}}
        for k in args.k:
            accuracy, series = series_accuracy(cascade, probabilities, truth, groups, k, args.draws_per_group,
                                               np.random.default_rng(0))
            report[name]["by_k"][str(k or "all")] = {"accuracy": accuracy, "series": series}
            print(f"{name:<12} k={k or 'all':<3} accuracy {100 * accuracy:5.1f} % over {series} series", flush=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
