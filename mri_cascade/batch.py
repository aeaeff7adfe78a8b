"""Batch prediction over files: what to classify, and one output row per file or series.

Both engines of ``mri-cascade predict`` use these, so their rows are the same: the plain one runs in this process,
the Ray one (``ray_engine``) on a cluster.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .cascade import Cascade
from .images import read_sources
from .labels import LABEL_IDS

PREDICTION_COLUMNS = ["path", "label", *LABEL_IDS, "slices", "refused", "reason", "unfamiliarity", "operating_point"]
MANIFEST_SUFFIXES = (".csv", ".parquet")
Unit = tuple[str, list[str]]  # what gets one answer (a file, or a folder for a series) and the files it reads


def collect_files(paths: list[str]) -> list[Path]:
    """Files named directly, every non-hidden file under named folders (recursively), in a stable order, and the
    files a manifest lists (a ``.csv`` or ``.parquet`` file with a ``path`` column; relative paths are taken from
    the manifest's folder)."""
    files = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and not any(
                part.startswith(".") for part in p.relative_to(path).parts)))
        elif path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file():
            files.extend(path.parent / listed for listed in manifest_paths(path))
        else:
            files.append(path)
    return files


def manifest_paths(manifest: Path) -> list[str]:
    if manifest.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(manifest)
        if "path" not in table.column_names:
            raise ValueError(f"{manifest} has no 'path' column")
        return [str(value) for value in table.column("path").to_pylist()]
    with manifest.open(newline="") as rows:
        reader = csv.DictReader(rows)
        if "path" not in (reader.fieldnames or []):
            raise ValueError(f"{manifest} has no 'path' column")
        return [row["path"] for row in reader]


def prediction_units(paths: list[str], series_by: str | None = None) -> list[Unit]:
    """One unit per file, or with ``series_by="folder"`` one per folder of files (pooled as one series)."""
    files = collect_files(paths)
    if series_by == "folder":
        groups: dict[Path, list[Path]] = {}
        for path in files:
            groups.setdefault(path.parent, []).append(path)
        return [(str(folder), [str(member) for member in members]) for folder, members in groups.items()]
    return [(str(path), [str(path)]) for path in files]


def predict_unit(cascade: Cascade, unit: str, members: list[str]) -> dict:
    """The output row of one unit. A file that cannot be read becomes a refused row whose reason says why; no row
    field holds anything of a DICOM header but what the answer needs."""
    row = {"path": unit, "label": None, **dict.fromkeys(LABEL_IDS), "slices": 0, "refused": False, "reason": "",
           "unfamiliarity": None, "operating_point": cascade.operating_point}
    problems: list[str] = []
    slices = read_sources(members, problems)  # a folder's DICOM files share one window, as a series does
    if not slices:
        row.update(refused=True, reason="; ".join(problems) or "no files")
        return row
    result = cascade.predict_series(slices) if len(slices) > 1 else cascade.predict(slices[0])
    row.update(label=result.label, slices=len(slices), refused=result.refused,
               reason="; ".join(filter(None, [result.reason, *problems])), unfamiliarity=result.unfamiliarity,
               **result.probabilities)
    return row


def csv_cell(value) -> str:
    """A row value as the plain engine's CSV writes it."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)
