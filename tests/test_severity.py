"""How severe (issue 41): stage 3 is scored per new patient with dementia, and the Space says how far to trust it,
with the benchmark's figures read at run time."""

import json

import numpy as np
import pytest

from mri_cascade import service
from mri_cascade.research import benchmark
from mri_cascade.research.benchmark import severity_figures
from mri_cascade.results import CascadeResult, StageResult


def write_benchmark(path, right: dict, always: float = 0.7) -> None:
    """The part of ``reports/benchmark.json`` the caution reads, with the shape ``severity_figures`` writes."""
    figures = {"subjects": 80, "by_severity": {"very_mild": 56, "mild": 22, "moderate": 2}, "right": right,
               "always_most_common": {"severity": "very_mild", "value": always, "low": 0.6, "high": 0.8}}
    path.write_text(json.dumps({"alzheimer_severity": figures}))


def alzheimer_answer() -> CascadeResult:
    stages = [StageResult("disease-detector", "Disease detector", {"healthy": 0.2, "disease": 0.8}, "disease"),
              StageResult("alzheimer-vs-tumor", "Alzheimer's vs tumor", {"alzheimer": 0.9, "tumor": 0.1}, "alzheimer"),
              StageResult("alzheimer-severity", "Alzheimer's severity",
                          {"very_mild": 0.6, "mild": 0.3, "moderate": 0.1}, "very_mild")]
    return CascadeResult(label="alzheimer_very_mild", display_name="Alzheimer's disease, very mild",
                         probabilities={"alzheimer_very_mild": 0.43, "healthy": 0.2}, stages=stages)


def test_an_alzheimer_answer_says_how_sure_its_severity_is_with_the_benchmarks_figures(tmp_path, monkeypatch):
    """A severity right for 61 % where always answering very mild is right for 70 %: the answer gives both and
    says it is no better. Catches a caution that claims a figure it does not read, or hides the baseline."""
    path = tmp_path / "benchmark.json"
    write_benchmark(path, {"value": 0.6125, "low": 0.5, "high": 0.72})
    monkeypatch.setattr(service, "BENCHMARK_REPORT", path)
    text = service.describe(alzheimer_answer()).answer
    assert ("For 80 new patients with dementia (benchmark) it was right for 61 % (95 % CI 50-72 %); always "
            "answering *very mild* was right for 70 %. On new patients it has not been shown to do better") in text
    write_benchmark(path, {"value": 0.9, "low": 0.8, "high": 0.95}, always=0.5)  # read afresh, every time
    text = service.describe(alzheimer_answer()).answer
    assert "right for 90 % (95 % CI 80-95 %)" in text and "not been shown" not in text


def test_without_the_report_the_caution_stands_alone_and_other_answers_carry_none(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(service, "BENCHMARK_REPORT", tmp_path / "missing.json")
    assert service.SEVERITY_CAUTION in service.describe(alzheimer_answer()).answer
    (tmp_path / "broken.json").write_text("{not json")
    monkeypatch.setattr(service, "BENCHMARK_REPORT", tmp_path / "broken.json")
    assert service.severity_caution() == service.SEVERITY_CAUTION
    assert "benchmark report cannot be read" in caplog.text
    tumor = CascadeResult(label="tumor_glioma", display_name="Glioma", probabilities={"tumor_glioma": 0.9}, stages=[])
    assert service.SEVERITY_CAUTION not in service.describe(tumor).answer


def test_the_severity_is_scored_per_subject_with_dementia_beside_always_answering_the_most_common(monkeypatch):
    """Six very mild and three mild subjects of two slices each, and a healthy one that must not count. Stage 3
    says very mild for every subject but one mild subject: right for 7 of 9, the majority 6 of 9, balanced accuracy
    of very mild against mild or worse (1 + 1/3) / 2. Catches scoring slices instead of pooled subjects, counting
    healthy subjects, and a balanced accuracy that is plain accuracy."""
    monkeypatch.setattr(benchmark, "BOOTSTRAP_RESAMPLES", 100)
    severities = ["alzheimer_very_mild"] * 6 + ["alzheimer_mild"] * 3 + ["healthy"]
    subjects = np.repeat([f"s{i}" for i in range(10)], 2)
    truth = np.repeat(severities, 2).astype(object)
    severity = np.tile([0.7, 0.2, 0.1], (20, 1))
    severity[12:14] = [[0.6, 0.3, 0.1], [0.1, 0.8, 0.1]]  # subject s6: one slice very mild, pooled mild
    probabilities = {"disease-detector": np.tile([0.3, 0.7], (20, 1)), "alzheimer-vs-tumor": np.tile([0.9, 0.1], (20, 1)),
                     "alzheimer-severity": severity, "tumor-type": np.tile([0.4, 0.3, 0.3], (20, 1))}
    figures = severity_figures(probabilities, truth, subjects)
    assert figures["subjects"] == 9 and figures["by_severity"] == {"very_mild": 6, "mild": 3}
    assert figures["right"]["value"] == pytest.approx(7 / 9)
    assert figures["always_most_common"]["severity"] == "very_mild"
    assert figures["always_most_common"]["value"] == pytest.approx(6 / 9)
    assert figures["mild_or_worse_balanced_accuracy"]["value"] == pytest.approx((1 + 1 / 3) / 2)
    assert figures["mild_or_worse_auc"]["value"] > 0.5
