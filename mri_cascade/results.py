"""What the cascade answers: one result per image or series, with every stage on the path taken."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

REFUSED_DISPLAY_NAME = "No answer: not a brain MRI slice"
DEFAULT_OPERATING_POINT = "balanced"


@dataclass
class StageResult:
    name: str  # the task, e.g. "disease-detector"
    title: str
    probabilities: dict[str, float]  # the model's classes -> probability
    decision: str


@dataclass
class CascadeResult:
    label: str | None  # one of the seven label ids; None when refused
    display_name: str
    probabilities: dict[str, float]  # all seven label ids -> joint probability, summing to 1; empty when refused
    stages: list[StageResult]  # the stages on the path taken, in order; empty when refused
    refused: bool = False  # True when the input does not look like a brain MRI slice: no diagnosis
    reason: str | None = None  # why it was refused, in plain words; for a series: also which slices were left out
    # and how many answered slices on their own disagree with the patient answer
    unfamiliarity: float | None = None  # how unlike the training scans the input is; above 1 is refused
    operating_point: str = DEFAULT_OPERATING_POINT  # which healthy thresholds decided it
    healthy_threshold: float | None = None  # the P(healthy) it had to pass to be called healthy; None when refused

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SeriesResult(CascadeResult):
    """One answer for a patient's series (label, probabilities, stages) plus every slice's own result. Its
    ``unfamiliarity`` is that of its least familiar answered slice."""

    slices: list[CascadeResult] = field(default_factory=list)
