"""What the Space shows: the cascade's result turned into the app's and the API's outputs."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from .cascade import Cascade
from .explain import DEFAULT_EXPLANATION
from .images import MAX_FILE_BYTES, MAX_PIXELS, MIN_SIDE, ImageSource, load_image, load_slices
from .labels import LABELS, TASKS, label_id_from_source
from .medical import MAX_SLICES
from .results import CascadeResult, SeriesResult

EXAMPLES_ENV = "MRI_CASCADE_EXAMPLES"
"""Environment variable naming another folder of example scans for the Space (default: the project's examples/)."""
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
REPORTS_DIR = Path(__file__).resolve().parent.parent / "reports"
EXPLANATION_REPORT = REPORTS_DIR / "explanation_benchmark_reporting.json"
"""The explanation benchmark's held-out part (``mri-cascade explain-benchmark``): the heatmap caption's figure."""
BENCHMARK_REPORT = REPORTS_DIR / "benchmark.json"
"""The benchmark on new patients (``mri-cascade benchmark``): the severity caution's figures."""
SEVERITY_CAUTION = ("**How severe is the least sure part of this answer.** The severity comes from the patient's "
                    "clinical dementia rating, which one scan shows only in part.")
REPORTED_METHODS = {"occlusion": "occlusion, answer", "grad-cam": "grad-cam, deciding model"}
"""The explanation methods' names in that report."""
OPERATING_POINT_NAMES = {
    "balanced": "Balanced",
    "screening": "Screening: fewer missed diseases, more false alarms",
}
OPERATING_POINT_HELP = (
    "Balanced gives the most right answers overall (for a patient's series: as many diseased patients found as "
    "healthy ones kept). Screening calls a scan healthy only when the disease detector "
    "is surer, so it misses fewer diseases (at least 95 % found on validation scans) and raises more false alarms."
)
REFUSAL_ADVICE = (
    "Upload a single 2-D brain MRI slice instead: a greyscale axial, coronal or sagittal slice of the head as PNG, "
    "JPEG or DICOM, or a NIfTI volume in the series tab. CT, ultrasound, X-ray and MRI of other body parts are "
    "not read."
)
CACHE_TTL_ENV = "MRI_CASCADE_CACHE_TTL"
"""Seconds an upload may stay in the Space's cache before it is deleted (default 60). Uploads are not deleted
the moment a request ends because Gradio stores identical uploads once: a concurrent request may still need it."""
EXAMPLE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
logger = logging.getLogger(__name__)
WHAT_TO_UPLOAD = (
    "**What to upload.** For Alzheimer's disease, upload the patient's series or volume in the *Patient series* tab "
    "(several axial slices, a DICOM series or a NIfTI file): one slice says little about it, the series says more. "
    "For a tumor, one axial slice through the lesion is enough. CT, X-ray and ultrasound are not read."
)
DISCLAIMER = (
    "**Research demo — not a medical device.** MRI Cascade has not been clinically validated. "
    "Do not use it to diagnose, treat or triage anyone; its answers are no substitute for a radiologist."
)


BRANCH_WORDS = {"alzheimer": "Alzheimer's disease than a tumor", "tumor": "a tumor than Alzheimer's disease"}
"""Stage 2's classes in the words of ``answer_against_bars``."""


@dataclass
class View:
    """Everything the UI shows for one scan."""

    answer: str  # markdown: the answer in plain words and its probability
    path: str  # one line: the route the cascade took
    joint: dict[str, float]  # display name -> joint probability, all seven answers
    stages: list[tuple[str, dict[str, float]]]  # (heading, class -> probability) per stage that ran
    payload: dict  # the API JSON
    refused: bool = False  # no diagnosis: the page shows the reason only
    heatmaps: list[tuple[Image.Image, str]] = field(default_factory=list)  # (overlay, caption), answered scans
    heatmap_caption: str = ""  # what the heatmaps are and how often they pointed right (``heatmap_caption``)
    result: CascadeResult | None = field(default=None, repr=False)  # the answer the heatmaps explain
    images: list[Image.Image] = field(default_factory=list, repr=False)  # the slices read, until their heatmaps are
    # drawn (``heatmaps_for``)
    drawing: bool = False  # ``heatmaps_for`` has started on this view
    replaced: bool = False  # the page shows another answer now (``replace``): its heatmaps are not wanted


def describe(result: CascadeResult) -> View:
    payload = {"label": result.label, "display_name": result.display_name, "refused": result.refused,
               "reason": result.reason, "unfamiliarity": result.unfamiliarity,
               "operating_point": result.operating_point,
               "probabilities": result.probabilities, "stages": [asdict(stage) for stage in result.stages]}
    if isinstance(result, SeriesResult):  # the /classify_series JSON adds every slice's label and probabilities
        payload["slices"] = [{"index": index, "label": item.label, "refused": item.refused,
                              "unfamiliarity": item.unfamiliarity, "probabilities": item.probabilities}
                             for index, item in enumerate(result.slices)]
    if result.refused:
        return View(f"## {result.display_name}\n\n{result.reason}\n\n{REFUSAL_ADVICE}", "", {}, [], payload, refused=True)
    probability = result.probabilities[result.label]
    if isinstance(result, SeriesResult):
        basis = f"Patient answer from {sum(not item.refused for item in result.slices)} slices · joint"
    else:
        basis = "Joint"
    answer = (f"## {result.display_name}\n\n{basis} probability **{100 * probability:.1f} %** · operating point: "
              f"{OPERATING_POINT_NAMES[result.operating_point].split(':')[0]}")
    steps = []
    for stage in result.stages:
        steps.append(f"{stage.title}: **{stage.decision.replace('_', ' ')}** ({100 * stage.probabilities[stage.decision]:.1f} %)")
    path = " → ".join(steps)
    stages = [
        (f"Stage {list(TASKS).index(stage.name) + 1} · {stage.title}",
         {name.replace("_", " "): p for name, p in stage.probabilities.items()})
        for stage in result.stages
    ]
    joint = {LABELS[label]: p for label, p in result.probabilities.items()}
    against = answer_against_bars(result)
    if against:
        answer += f"\n\n{against}"
    if result.label.startswith("alzheimer_"):
        answer += f"\n\n{severity_caution()}"
    if result.reason:  # a series that left some slices out says so
        answer += f"\n\n{result.reason}"
    return View(answer, path, joint, stages, payload)


def answer_against_bars(result: CascadeResult) -> str | None:
    """One line on why the answer is not the highest of the seven bars (None when it is): the healthy rule's
    threshold, or stage 2's choice of branch, decided against the joint probabilities."""
    if result.refused or not result.probabilities or result.healthy_threshold is None:
        return None
    top = max(result.probabilities, key=result.probabilities.get)
    if top == result.label:
        return None
    p_healthy, threshold = result.stages[0].probabilities["healthy"], result.healthy_threshold
    digits = next((d for d in (2, 3, 4) if f"{p_healthy:.{d}f}" != f"{threshold:.{d}f}"), 4)
    point = OPERATING_POINT_NAMES[result.operating_point].split(":")[0].lower()
    rule = (f"At the {point} point, '{LABELS['healthy']}' needs P(healthy) > {threshold:.{digits}f}; "
            f"here it is {p_healthy:.{digits}f}")
    if result.label == "healthy":
        return f"{rule}, so that is the answer, although '{LABELS[top]}' has the highest bar."
    if top == "healthy":
        return f"{rule}, so the answer is the likeliest disease, '{result.display_name}'."
    branch = result.stages[1]
    return (f"Stage 2 finds it more like {BRANCH_WORDS[branch.decision]} (P {branch.probabilities[branch.decision]:.2f}), "
            f"so the answer is the likeliest on that branch, '{result.display_name}', although '{LABELS[top]}' has "
            "the highest bar.")


def limits_text() -> str:
    return (
        f"Limits: {MAX_FILE_BYTES >> 20} MB per file, {MAX_PIXELS // 1_000_000} megapixels per picture, "
        f"slices at least {MIN_SIDE}×{MIN_SIDE} px, {MAX_SLICES} slices per series. Uploads are deleted within "
        f"{cache_ttl_seconds()} s; nothing you send is logged or kept."
    )


def cache_ttl_seconds() -> int:
    return max(1, int(os.environ.get(CACHE_TTL_ENV, "60")))


def classify(cascade: Cascade, image: ImageSource, explain: bool = True, operating_point: str | None = None) -> View:
    """The view of one slice at ``operating_point`` (default: the cascade's own); with ``explain``, its heatmap
    too (when answered; ``heatmaps_for``). The Space answers with ``explain=False`` and draws the heatmap after."""
    loaded = load_image(image)
    result = cascade.predict(loaded, operating_point=operating_point)
    view = describe(result)
    view.result, view.images = result, [] if result.refused else [loaded]
    if explain:
        _explain_now(cascade, view)
    return view


Progress = Callable[[float, str], object]
"""Told how far a long request is: (fraction done, what it is doing), e.g. a ``gr.Progress``."""
HEATMAP_BATCH = 8
HEATMAP_WAIT_SECONDS = 600
"""How long the Space keeps an answer's slices in memory (never on disk) for its heatmaps, which are drawn after
the answer is shown and may queue behind other pages' heatmaps; drawing them lets the slices go at once."""
HEATMAP_FAILED = "The heatmap could not be made for this answer."
HEATMAP_PENDING = "Drawing the heatmap …"
HEATMAP_EXPIRED = ("The heatmap was not drawn: the scan had already been deleted from the server. Classify it again "
                   "to see it.")
HEATMAP_WHAT = ("Occlusion map: bright where painting over the slice (with the head's median grey) lowers the "
                "answer's probability most.")


def heatmaps_for(cascade: Cascade, view: View, progress: Progress | None = None, start: float = 0.0) -> View | None:
    """Draw the heatmaps of ``view``'s answer (``classify`` or ``classify_series`` with ``explain=False``):
    ``view.heatmaps``, one per answered slice of a series, and ``view.heatmap_caption``; then ``view`` no longer
    holds its slices. ``progress`` is told each batch, from ``start`` to 1. Should the heatmaps fail, the caption says
    so and the answer stands. None when there is nothing to draw: a refused answer, a view already being drawn, or
    one ``replace``d before its last batch (the heatmaps stop at the next batch)."""
    if view.result is None or view.result.refused or view.drawing:
        return None
    view.drawing = True
    if isinstance(view.result, SeriesResult):
        indices = [index for index, item in enumerate(view.result.slices) if not item.refused]
        names = [f"slice {index + 1}" for index in indices]
    else:
        indices, names = [0], []
    images = [view.images[index] for index in indices]
    explanations = []
    try:
        for first in range(0, len(images), HEATMAP_BATCH):
            if progress:
                progress(start + (1 - start) * first / len(images), f"heatmaps: slice {first + 1} of {len(images)}")
            if view.replaced:
                return None
            explanations += cascade.explain_batch(images[first : first + HEATMAP_BATCH], view.result)
    except Exception as error:  # e.g. the PyTorch weights for Grad-CAM cannot be loaded; never name the input
        logger.warning("heatmap failed: %s", type(error).__name__)
        view.heatmaps, view.heatmap_caption = [], HEATMAP_FAILED
    else:
        if view.replaced:
            return None
        names = names or [f"{item.stage}: evidence for {item.target}" for item in explanations]
        view.heatmaps = [(item.overlay, name) for item, name in zip(explanations, names)]
        view.heatmap_caption = heatmap_caption(view.result)
    finally:
        view.images = []
    return view


def _explain_now(cascade: Cascade, view: View, progress: Progress | None = None, start: float = 0.0) -> None:
    """``heatmaps_for`` within the answer (``explain=True``): a failure is said under the answer."""
    if heatmaps_for(cascade, view, progress, start) is not None and view.heatmap_caption == HEATMAP_FAILED:
        view.answer += f"\n\n{HEATMAP_FAILED}"


def replace(shown: View | None, new: View) -> View:
    """``new``, the answer a page shows instead of ``shown``: heatmaps still being drawn for ``shown`` stop."""
    if shown is not None and shown is not new:
        shown.replaced = True
    return new


def read_report(path: Path, name: str, extract: Callable[[dict], dict | None]) -> dict | None:
    """``extract`` of the JSON report at ``path``, read afresh on every call: None when the report is missing, and
    None with a warning naming the ``name``d report when it is unreadable or lacks what ``extract`` takes."""
    try:
        return extract(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("the %s cannot be read: %s", name, type(error).__name__)
        return None


def interval_text(figure: dict) -> str:
    """' (95 % CI low-high %)' of a figure with shares ``low`` and ``high``; '' when either is None."""
    if figure["low"] is None or figure["high"] is None:
        return ""
    return f" (95 % CI {100 * figure['low']:.0f}-{100 * figure['high']:.0f} %)"


def heatmap_pointing(method: str = DEFAULT_EXPLANATION) -> dict | None:
    """How often ``method``'s hottest point lay on the tumor, on the held-out tumor slices with known boxes of
    ``EXPLANATION_REPORT`` (all sources): {"value": share, "low", "high" (95 % interval, may be None), "images"}.
    None when the report is missing, unreadable or has no such figure (``read_report``)."""
    def pointing(report: dict) -> dict | None:
        figure = report["methods"][REPORTED_METHODS[method]]["by_source"]["all"]["pointing"]
        share, images = figure["value"], int(figure["images"])
        if share is None or not images:
            return None
        return {"value": float(share), "low": figure.get("low"), "high": figure.get("high"), "images": images}
    return read_report(EXPLANATION_REPORT, "explanation report", pointing)


def severity_reliability() -> dict | None:
    """The benchmark's figures of stage 3 on new patients with dementia (``benchmark.severity_figures``): how often
    their severity was right, and how often always answering the most common one was. None when the report is
    missing, unreadable or has no such figures (``read_report``)."""
    def reliability(report: dict) -> dict | None:
        figures = report["alzheimer_severity"]
        right, common = figures["right"], figures["always_most_common"]
        if not int(figures["subjects"]):
            return None
        return {"subjects": int(figures["subjects"]), "right": float(right["value"]),
                "low": right.get("low"), "high": right.get("high"),
                "most_common": str(common["severity"]).replace("_", " "), "always_most_common": float(common["value"])}
    return read_report(BENCHMARK_REPORT, "benchmark report", reliability)


def severity_caution() -> str:
    """The line under an Alzheimer's answer: severity is its least sure part, with the benchmark's figures
    (``severity_reliability``) when there are any, and a plain verdict when it does no better than always
    answering the most common severity."""
    figures = severity_reliability()
    if figures is None:
        return SEVERITY_CAUTION
    verdict = ""
    if figures["low"] is None or figures["low"] <= figures["always_most_common"]:
        verdict = " On new patients it has not been shown to do better than that."
    return (f"{SEVERITY_CAUTION} For {figures['subjects']} new patients with dementia (benchmark) it was right for "
            f"{100 * figures['right']:.0f} %{interval_text(figures)}; always answering *{figures['most_common']}* "
            f"was right for {100 * figures['always_most_common']:.0f} %.{verdict}")


def heatmap_caption(result: CascadeResult) -> str:
    """What the heatmap of ``result`` is, and for a tumor how often it pointed at the tumor on held-out slices
    (``heatmap_pointing``; no figure when the report is missing). Alzheimer's disease and healthy scans have no
    boxes to check a map against: their caption says it shows what the answer depends on."""
    if result.label is None:
        return ""
    if result.label.startswith("alzheimer_"):
        return (f"{HEATMAP_WHAT} Alzheimer's disease has no boxes to check it against: it shows what the answer "
                "depends on, not a lesion.")
    if result.label == "healthy":
        return f"{HEATMAP_WHAT} With no disease found there is no lesion to point at: it shows what the answer depends on."
    pointing = heatmap_pointing()
    if pointing is None:
        return HEATMAP_WHAT
    return (f"{HEATMAP_WHAT} On {pointing['images']} held-out tumor slices with known boxes its hottest point lay on "
            f"the tumor {100 * pointing['value']:.0f} % of the time{interval_text(pointing)}.")


SLICE_COLUMNS = ["slice", "answer", "probability", "P(disease)"]


def slice_table(result: SeriesResult) -> list[list]:
    """One row per slice, in the order given; slices are numbered, never named (file names can carry identities)."""
    return [
        [index + 1, item.display_name, None, None] if item.refused else
        [index + 1, LABELS[item.label], round(item.probabilities[item.label], 4),
         round(1 - item.probabilities["healthy"], 4)]
        for index, item in enumerate(result.slices)
    ]


def classify_series(cascade: Cascade, images: list[ImageSource], explain: bool = True,
                    operating_point: str | None = None, progress: Progress | None = None) -> tuple[View, list[list]]:
    """The patient view and per-slice table at ``operating_point``; with ``explain``, each answered slice's
    heatmap for the patient answer (``heatmaps_for``). ``progress`` is told each step."""
    if progress:
        progress(0.0, f"reading {len(images)} files")
    slices = load_slices(images)
    if progress:
        progress(0.1, f"classifying {len(slices)} slices")
    result = cascade.predict_series(slices, operating_point=operating_point)
    view = describe(result)
    view.result, view.images = result, [] if result.refused else list(slices)
    if explain:
        _explain_now(cascade, view, progress, 0.4)
    return view, slice_table(result)


def example_scans(folder: str | os.PathLike | None = None, limit: int = 12) -> list[tuple[str, str]]:
    """(path, caption) of the image files in ``folder`` (default ``$MRI_CASCADE_EXAMPLES``, else the project's
    ``examples/``), sorted; empty when the folder is missing. A file named ``<collection>-<class folder>.<ext>``
    is captioned with its true answer, e.g. "Glioma (true answer)"."""
    folder = Path(folder or os.environ.get(EXAMPLES_ENV) or EXAMPLES_DIR)
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXAMPLE_SUFFIXES and p.is_file())
    return [(str(path), _example_caption(path)) for path in files[:limit]]


def _example_caption(path: Path) -> str:
    collection, _, class_folder = path.stem.partition("-")
    try:
        answer = LABELS[label_id_from_source(class_folder)]
    except ValueError:
        return path.stem
    return f"{answer} (true answer, {collection.replace('_', ' ')} test scan)"
