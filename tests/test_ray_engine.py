"""`mri-cascade predict --engine ray` on a local Ray instance: the plain engine's rows, bad files as rows, restarts
that finish every file exactly once, and a worker plan that never takes the CPUs Ray Data's tasks need."""

import signal
from contextlib import contextmanager

import pandas as pd
import pytest
from conftest import SHARED_DATA, jpeg_bytes, synthetic_slice

from mri_cascade.cli import main
from mri_cascade.ray_engine import LOCAL_HEADROOM_CPUS, worker_plan

ray = pytest.importorskip("ray")


@contextmanager
def at_most(seconds: int):
    """Fail instead of hanging when a pipeline stalls."""
    def stalled(*_):
        raise TimeoutError(f"the Ray pipeline did not finish in {seconds} s")
    previous = signal.signal(signal.SIGALRM, stalled)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    for index in range(24):
        (folder / f"scan{index:02d}.jpg").write_bytes(jpeg_bytes(synthetic_slice(index, lesion=index % 3 == 0)))
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    real = sorted((SHARED_DATA / "alzheimer" / "test" / "MildDemented").glob("*.jpg"))[:4]
    for path in real:  # real scans where the shared data exists
        (folder / f"real-{path.name}").write_bytes(path.read_bytes())
    return folder


def rows_by_path(frame: pd.DataFrame) -> dict:
    return {row["path"]: row for row in frame.to_dict("records")}


def test_ray_rows_equal_the_plain_engine_and_a_bad_file_is_a_row(local_ray, scans, tiny_models, tmp_path, capsys):
    plain, distributed = tmp_path / "plain.csv", tmp_path / "ray.parquet"
    assert main(["predict", str(scans), "--models", str(tiny_models), "--out", str(plain)]) == 0
    capsys.readouterr()
    with at_most(300):
        assert main(["predict", str(scans), "--models", str(tiny_models), "--out", str(distributed),
                     "--engine", "ray", "--batch-size", "5"]) == 0
    assert f"not answered: {scans / 'broken.jpg'}: 'broken.jpg' is not a readable image" in capsys.readouterr().err
    expected, got = rows_by_path(pd.read_csv(plain)), rows_by_path(pd.read_parquet(distributed))
    assert set(got) == set(expected) and len(got) == len(pd.read_parquet(distributed))
    for path, row in expected.items():
        assert (None if pd.isna(got[path]["label"]) else got[path]["label"]) == (None if pd.isna(row["label"]) else row["label"])
        assert bool(got[path]["refused"]) == bool(row["refused"])
        assert got[path]["tumor_glioma"] == pytest.approx(row["tumor_glioma"], abs=1e-6, nan_ok=True)
    broken = got[str(scans / "broken.jpg")]
    assert broken["refused"] and "broken.jpg" in broken["reason"]


def test_a_restart_classifies_only_what_is_missing(local_ray, scans, tiny_models, tmp_path):
    out = tmp_path / "results.parquet"
    files = sorted(str(path) for path in scans.iterdir())
    with at_most(300):
        main(["predict", *files[:10], "--models", str(tiny_models), "--out", str(out), "--engine", "ray"])
        (out / ".part-interrupted.parquet.tmp").write_bytes(b"half a part")  # a batch cut off by the stop
        main(["predict", str(scans), "--models", str(tiny_models), "--out", str(out), "--engine", "ray"])
    paths = pd.read_parquet(out)["path"].tolist()
    assert sorted(paths) == files  # every file exactly once
    assert not list(out.glob(".part-*.tmp"))


@pytest.mark.parametrize(("total", "cluster", "asked"), [(2, False, None), (2, False, 2.0), (8, True, None), (1, False, None)])
def test_workers_always_leave_cpus_for_the_read_tasks(total, cluster, asked):
    per_worker, workers = worker_plan(total, cluster, asked)
    assert workers >= 1 and per_worker > 0
    assert per_worker * workers <= total - LOCAL_HEADROOM_CPUS + 1e-9 or per_worker <= 0.25


def test_ray_is_started_quiet(monkeypatch, tmp_path):
    """Catches Ray's driver logs (start-up, Ray Data's execution plans, one bar per operator) flooding the terminal."""
    import logging

    from mri_cascade import ray_engine

    started = {}

    class Stop(Exception):
        pass

    def init(**options):
        started.update(options)
        raise Stop

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(Stop):
        ray_engine.predict_on_ray([("a.jpg", ["a.jpg"])], None, str(tmp_path / "out"), "balanced")
    assert started["log_to_driver"] is False and started["logging_level"] >= logging.WARNING
