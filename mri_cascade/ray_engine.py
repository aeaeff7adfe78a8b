"""Batch prediction on Ray Data: an archive of scans over a cluster, from a laptop to KubeRay.

The driver lists the units (files, or folders for a series), skips those already in ``--out``, and hands the rest
to ``Dataset.map_batches`` with a pool of actors, each holding one ``Cascade`` loaded once (from a directory or
Hub prefix every worker can reach) and running ONNX Runtime with as many threads as CPUs it claims. The driver
writes each finished batch as its own Parquet (or CSV) part file, atomically, so a job stopped half-way and
started again with the same ``--out`` reads back what is done and classifies only the rest: every file exactly once.

Rows are ``batch.predict_unit``'s, the same as the plain engine's: an unreadable or refused file is a row with its
reason, never a failed job.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from .batch import PREDICTION_COLUMNS, Unit, csv_cell, predict_unit
from .runtime import WORKERS_ENV

RAY_INSTALL = 'pip install "ray[data]==2.60.0" (or: pip install -r requirements-ray.txt)'
LOCAL_HEADROOM_CPUS = 0.5
"""What a local instance leaves free beside the model workers, so that Ray Data's own tasks always get a CPU."""
CLUSTER_CPUS_PER_WORKER = 2.0
RAY_LOGGING_LEVEL = logging.WARNING
"""Ray's own driver logs below this level (start-up, Ray Data's plans) are not shown: the terminal keeps one
progress bar and the summary. Workers' logs never reach it (``log_to_driver=False``)."""


class CascadeWorker:
    """A Ray Data actor: one cascade, loaded once, answering a batch of units at a time."""

    def __init__(self, models: str | None, operating_point: str, threads: int):
        os.environ[WORKERS_ENV] = str(threads)  # before the ONNX pool exists
        from .cascade import Cascade

        self.cascade = Cascade.from_pretrained(models, operating_point=operating_point)

    def __call__(self, batch: dict) -> dict:
        rows = [predict_unit(self.cascade, str(unit), [str(member) for member in members])
                for unit, members in zip(batch["path"], batch["members"])]
        return {column: [row[column] for row in rows] for column in PREDICTION_COLUMNS}


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise SystemExit(f"mri-cascade: --engine ray needs Ray Data: {RAY_INSTALL}") from None
    return ray


def written_paths(out: Path) -> set[str]:
    """The units already in a results folder: every complete part file's ``path`` column."""
    if not out.is_dir():
        return set()
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    done: set[str] = set()
    for part in sorted(out.glob("part-*")):
        table = pq.read_table(part, columns=["path"]) if part.suffix == ".parquet" else pa_csv.read_csv(part)
        done.update(str(value) for value in table.column("path").to_pylist())
    return done


def write_part(rows: dict, out: Path, csv_format: bool) -> None:
    """One finished batch as a part file, written under a temporary name and renamed: a part is whole or absent."""
    import pyarrow as pa

    name = f"part-{uuid.uuid4().hex}.{'csv' if csv_format else 'parquet'}"
    temporary = out / f".{name}.tmp"
    if csv_format:
        import pyarrow.csv as pa_csv

        table = pa.table({column: [csv_cell(value) for value in rows[column]] for column in PREDICTION_COLUMNS})
        pa_csv.write_csv(table, temporary)
    else:
        import pyarrow.parquet as pq

        pq.write_table(pa.table({column: list(rows[column]) for column in PREDICTION_COLUMNS}), temporary)
    temporary.rename(out / name)


def worker_plan(total_cpus: float, cluster: bool, cpus_per_worker: float | None = None) -> tuple[float, int]:
    """(CPUs per model worker, workers). Actors that claim every CPU would leave Ray Data's read tasks waiting for
    one, and the pipeline would stall: the workers together always leave ``LOCAL_HEADROOM_CPUS`` free. Default: on a
    local instance one worker with the rest of the CPUs; on a cluster ``CLUSTER_CPUS_PER_WORKER`` each."""
    if cpus_per_worker is None:
        cpus_per_worker = CLUSTER_CPUS_PER_WORKER if cluster else total_cpus - LOCAL_HEADROOM_CPUS
    cpus_per_worker = min(max(0.25, cpus_per_worker), max(0.25, total_cpus - LOCAL_HEADROOM_CPUS))
    return cpus_per_worker, max(1, int((total_cpus - LOCAL_HEADROOM_CPUS) // cpus_per_worker))


def predict_on_ray(units: list[Unit], models: str | None, out: str, operating_point: str, address: str | None = None,
                   cpus_per_worker: float | None = None, batch_size: int = 32) -> dict:
    """Classify ``units`` on a Ray cluster (``address``: a running one, or "auto"; None starts a local instance)
    into the results folder ``out`` (Parquet parts; CSV parts when ``out`` ends in ``.csv``). Returns the counts, and
(path, reason) of each unit not answered in this run."""
    ray = import_ray()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for leftover in out_dir.glob(".part-*.tmp"):  # a batch that was being written when the job stopped
        leftover.unlink()
    done = written_paths(out_dir)
    todo = [(unit, members) for unit, members in units if unit not in done]
    summary = {"rows": len(units), "skipped": len(units) - len(todo), "answered": 0, "refused": 0, "unanswered": []}
    if not todo:
        return summary
    if models is not None and os.path.isdir(models):
        models = str(Path(models).resolve())  # workers start elsewhere
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=RAY_LOGGING_LEVEL)
        else:
            ray.init(num_cpus=os.cpu_count(), _node_ip_address="127.0.0.1", include_dashboard=False,
                     log_to_driver=False, logging_level=RAY_LOGGING_LEVEL)
    context = ray.data.DataContext.get_current()
    context.enable_operator_progress_bars = False  # one bar for the whole job, not one per operator
    context.print_on_execution_start = False
    try:
        cpus_per_worker, workers = worker_plan(float(ray.cluster_resources().get("CPU", 1)), bool(address),
                                               cpus_per_worker)
        dataset = ray.data.from_items([{"path": unit, "members": members} for unit, members in todo])
        answered = dataset.map_batches(
            CascadeWorker, batch_size=batch_size, batch_format="numpy", num_cpus=cpus_per_worker,
            compute=ray.data.ActorPoolStrategy(size=workers),
            fn_constructor_kwargs={"models": models, "operating_point": operating_point,
                                   "threads": max(1, round(cpus_per_worker))})
        for batch in answered.iter_batches(batch_size=batch_size, batch_format="numpy"):
            rows = {column: [value.item() if hasattr(value, "item") else value for value in batch[column]]
                    for column in PREDICTION_COLUMNS}
            write_part(rows, out_dir, out_dir.suffix.lower() == ".csv")
            summary["unanswered"] += [(path, reason) for path, reason, refused in
                                      zip(rows["path"], rows["reason"], rows["refused"]) if refused]
            summary["refused"] += sum(bool(refused) for refused in rows["refused"])
            summary["answered"] += sum(not refused for refused in rows["refused"])
    finally:
        if started_here:
            ray.shutdown()
    return summary
