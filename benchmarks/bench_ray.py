"""Throughput of ``mri-cascade predict --engine ray`` against the plain engine, on the same files and cores.

    python -m benchmarks.bench_ray ../shared/data/alzheimer/train --repeat 1     # writes reports/ray.json

Both engines run as whole processes, one after the other, each ``--repeat`` times, on every image under the given
folders, on the same cores; the figure is images per second of wall time, start-up included (the Ray engine starts
a local instance in each run, ~15 s here, so use thousands of files). The label of every file is compared between
the engines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from mri_cascade.batch import collect_files

REPO = Path(__file__).resolve().parent.parent


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "ray.json")
    args = parser.parse_args()
    files = collect_files(args.paths)
    cli = [sys.executable, "-m", "mri_cascade.cli", "predict", *map(str, args.paths)]
    plain_times, ray_times, labels_equal = [], [], None
    with tempfile.TemporaryDirectory() as scratch:
        for run in range(args.repeat):
            plain_out, ray_out = Path(scratch) / f"plain{run}.csv", Path(scratch) / f"ray{run}.parquet"
            plain_times.append(timed([*cli, "--out", str(plain_out)]))
            ray_times.append(timed([*cli, "--out", str(ray_out), "--engine", "ray"]))
            plain = pd.read_csv(plain_out).set_index("path")["label"].fillna("")
            distributed = pd.read_parquet(ray_out).set_index("path")["label"].fillna("")
            labels_equal = int((plain.sort_index() == distributed.sort_index()).sum())
    report = {
        "images": len(files), "repeats": args.repeat, "cores": len(__import__("os").sched_getaffinity(0)),
        "plain_seconds": plain_times, "ray_seconds": ray_times,
        "plain_images_per_second": len(files) / statistics.median(plain_times),
        "ray_images_per_second": len(files) / statistics.median(ray_times),
        "labels_equal": labels_equal,
    }
    report["ray_over_plain"] = report["ray_images_per_second"] / report["plain_images_per_second"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{len(files)} images: plain {report['plain_images_per_second']:.1f} images/s, Ray "
          f"{report['ray_images_per_second']:.1f} images/s ({report['ray_over_plain']:.2f}x, start-up included); "
          f"labels equal on {labels_equal} of {len(files)} -> {args.out}")


if __name__ == "__main__":
    main()
