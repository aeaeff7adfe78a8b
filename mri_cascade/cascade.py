"""The four-model cascade: healthy or disease, Alzheimer's or tumor, then severity or type."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

from .calibration import TEMPERATURE_KEY, softmax
from .explain import Explanation, display_size, grad_cam, overlay_heatmap
from .familiarity import FAMILIARITY_FILE, REFUSAL_REASON, FamiliarityCheck
from .images import ImageSource, load_image, load_slices
from .labels import ALZHEIMER_SEVERITY, ALZHEIMER_VS_TUMOR, DISEASE_DETECTOR, LABELS, TASKS, TUMOR_TYPE
from .runtime import ONNX_FILE, WEIGHTS_FILE, GreyPreprocessor, OnnxRunner, TorchRunner, file_sha256, fresh_onnx_export

DEFAULT_MODELS = Path(__file__).resolve().parent.parent / "models"
MODELS_ENV = "MRI_CASCADE_MODELS"
"""Environment variable naming the models: a local directory or a Hub prefix (default: the shipped models/)."""


DEFAULT_HEALTHY_THRESHOLD = 0.5
REFUSED_DISPLAY_NAME = "No answer: not a brain MRI slice"
logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A cascade model could not be loaded; the message names the model and where it was looked for."""


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
    reason: str | None = None  # why it was refused, in plain words (for a series: also which slices were left out)
    unfamiliarity: float | None = None  # how unlike the training scans the input is; above 1 is refused

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SeriesResult(CascadeResult):
    """One answer for a patient's series (label, probabilities, stages) plus every slice's own result. Its
    ``unfamiliarity`` is that of its least familiar answered slice."""

    slices: list[CascadeResult] = field(default_factory=list)


def pool_series(stage_probabilities: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each model's class probabilities pooled over a series' slices: the mean of the log-probabilities
    (a renormalised geometric mean), so consistent evidence across slices adds up and one odd slice
    cannot outvote the rest."""
    pooled = {}
    for task, probabilities in stage_probabilities.items():
        mean_log = np.log(np.clip(probabilities, 1e-12, 1.0)).mean(axis=0)
        weights = np.exp(mean_log - mean_log.max())
        pooled[task] = (weights / weights.sum())[None, :]
    return pooled


def model_location(source: str | os.PathLike | None, task: str) -> str:
    """Where a task's model lives: ``<dir>/<task>`` for a local directory, else the Hub repo ``<prefix>-<task>``."""
    if source is None:
        source = os.environ.get(MODELS_ENV) or DEFAULT_MODELS
    if os.path.isdir(source):
        return str(Path(source) / task)
    return f"{source}-{task}"


@dataclass
class Stage:
    """One loaded model: its config (classes, threshold), image processor and a function giving logits and
    embeddings."""

    config: object
    processor: object
    run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # pixel_values (N, 3, H, W) -> logits, embedding
    location: str
    backend: str  # "onnx" or "torch"

    def __post_init__(self) -> None:
        fast = GreyPreprocessor.for_processor(self.processor)
        self.preprocess: Callable[[list], np.ndarray] = fast or (
            lambda images: self.processor(images, return_tensors="np")["pixel_values"]
        )

    @cached_property
    def torch_model(self):
        """The PyTorch model (for gradients: heatmaps), loaded on first use when the stage runs on ONNX."""
        if isinstance(self.run, TorchRunner):
            return self.run.model
        model = AutoModelForImageClassification.from_pretrained(self.location, use_safetensors=True,
                                                                 trust_remote_code=False)
        return model.eval()


def _resolve(location: str, filename: str) -> str | None:
    """Local path of ``filename`` in a model directory or Hub repo (downloaded or cached), None if absent."""
    if os.path.isdir(location):
        path = os.path.join(location, filename)
        return path if os.path.isfile(path) else None
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(location, filename)
    except Exception:  # not on the Hub, offline without a cached copy, ...
        return None


def load_stage(location: str, task: str, backend: str = "auto") -> Stage:
    """Load one task's model for inference: its ONNX export when present and fresh (``backend`` auto/onnx),
    else PyTorch. Its config must name exactly the task's classes in ``id2label``."""
    config = AutoConfig.from_pretrained(location, trust_remote_code=False)
    expected, found = set(TASKS[task].classes), set(config.id2label.values())
    if found != expected:
        raise ModelLoadError(
            f"the {task} model at {location} has classes {sorted(found)} in config.json (id2label), "
            f"expected {sorted(expected)}"
        )
    processor = AutoImageProcessor.from_pretrained(location, trust_remote_code=False)
    if backend in ("auto", "onnx"):
        onnx_path, weights_path = _resolve(location, ONNX_FILE), _resolve(location, WEIGHTS_FILE)
        if onnx_path and weights_path and fresh_onnx_export(onnx_path, weights_path):
            try:
                return Stage(config, processor, OnnxRunner(onnx_path), location, "onnx")
            except Exception as error:  # onnxruntime raises its own types for a damaged graph
                raise ModelLoadError(f"the ONNX export at {onnx_path} cannot be run: {error}") from error
        if backend == "onnx":
            raise ModelLoadError(f"no up-to-date ONNX export at {location}/{ONNX_FILE}")
    model = AutoModelForImageClassification.from_pretrained(location, use_safetensors=True, trust_remote_code=False)
    return Stage(model.config, processor, TorchRunner(model), location, "torch")


def load_familiarity(source: str | os.PathLike | None) -> FamiliarityCheck | None:
    """The refusal check stored beside the disease detector, None (with a warning) when there is none.
    A check that exists but cannot be fetched stops the start rather than let the cascade answer everything.
    A check fitted on other weights than the models' own is refused: it would measure the wrong thing."""
    location = model_location(source, DISEASE_DETECTOR.name)
    if os.path.isdir(location):
        path = _resolve(location, FAMILIARITY_FILE)
    else:  # only a check that the Hub says is absent may be done without; a failed download must not fail open
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import RemoteEntryNotFoundError

        try:
            path = hf_hub_download(location, FAMILIARITY_FILE)
        except RemoteEntryNotFoundError:
            path = None
        except Exception as error:
            raise ModelLoadError(f"could not fetch the refusal check {location}/{FAMILIARITY_FILE}: {error}") from error
    if path is None:
        logger.warning("no %s beside the disease detector: the cascade will answer every input", FAMILIARITY_FILE)
        return None
    try:
        check = FamiliarityCheck.load(path)
    except Exception as error:
        raise ModelLoadError(f"the refusal check at {path} cannot be read: {error}") from error
    for task, expected in check.weights_sha256.items():
        weights = _resolve(model_location(source, task), WEIGHTS_FILE)
        if weights is None or file_sha256(weights) != expected:
            raise ModelLoadError(f"the refusal check at {path} was fitted on other {task} weights; "
                                 "run `mri-cascade fit-familiarity` again")
    return check


class Cascade:
    def __init__(self, stages: dict[str, Stage], familiarity: FamiliarityCheck | None = None):
        missing = set(TASKS) - set(stages)
        if missing:
            raise ValueError(f"cascade needs all four models; missing {sorted(missing)}")
        self.stages = stages
        self.familiarity = familiarity
        detector_config = stages[DISEASE_DETECTOR.name].config
        self.healthy_threshold = float(getattr(detector_config, "healthy_threshold", DEFAULT_HEALTHY_THRESHOLD))
        # tasks whose image processors agree share one preprocessing pass
        self.preprocessing_groups: dict[str, list[str]] = {}
        for task, stage in stages.items():
            key = json.dumps(stage.processor.to_dict(), sort_keys=True, default=str)
            self.preprocessing_groups.setdefault(key, []).append(task)
        # logit columns in each task's class order
        self.class_columns = {task: [stage.config.label2id[c] for c in TASKS[task].classes] for task, stage in stages.items()}

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike | None = None, backend: str = "auto") -> Cascade:
        """Load the four models from ``source``: a local directory holding one folder per task, or a Hub
        prefix such as ``org/mri`` (``org/mri-disease-detector``, ...). None means ``$MRI_CASCADE_MODELS``,
        else the shipped ``models/``. ``backend``: "auto" (ONNX Runtime where a fresh export exists),
        "onnx" or "torch". Weights load from safetensors or ONNX only; no remote code runs. The refusal check
        (``familiarity.safetensors`` beside the disease detector) loads too when present."""
        stages = {}
        for task in TASKS:
            location = model_location(source, task)
            try:
                stages[task] = load_stage(location, task, backend)
            except ModelLoadError:
                raise
            except Exception as error:  # any failure to load (missing, corrupt, pickle-only ...) stops the start-up
                raise ModelLoadError(f"could not load the {task} model from {location}: {error}") from error
        return cls(stages, load_familiarity(source))

    def stage_probabilities(self, images: Sequence[ImageSource], batch_size: int = 8) -> dict[str, np.ndarray]:
        """Every model's class probabilities for every image, columns in each task's class order, each model's
        logits divided by the temperature its config stores (1 if none)."""
        return self.calibrated(self.stage_logits(images, batch_size))

    def calibrated(self, logits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {task: softmax(values, float(getattr(self.stages[task].config, TEMPERATURE_KEY, 1.0)))
                for task, values in logits.items()}

    def stage_logits(self, images: Sequence[ImageSource], batch_size: int = 8) -> dict[str, np.ndarray]:
        """Every model's logits for every image, columns in each task's class order."""
        return self.run_models(images, batch_size)[0]

    def run_models(self, images: Sequence[ImageSource],
                   batch_size: int = 8) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Every model's logits (columns in each task's class order) and image embeddings for every image.

        Images are preprocessed once per distinct image-processor setting, then each model runs once per batch.
        """
        groups = list(self.preprocessing_groups.values())

        def prepare(chunk: Sequence[ImageSource]) -> list[np.ndarray]:
            loaded = [load_image(image) for image in chunk]
            return [self.stages[tasks[0]].preprocess(loaded) for tasks in groups]

        logits: dict[str, list[np.ndarray]] = {task: [np.zeros((0, len(TASKS[task].classes)))] for task in TASKS}
        embeddings: dict[str, list[np.ndarray]] = {task: [] for task in TASKS}
        chunks = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
        # decode and resize the next chunk while the models run on this one (both release the GIL)
        with ThreadPoolExecutor(max_workers=1) as prefetcher:
            upcoming = prefetcher.submit(prepare, chunks[0]) if chunks else None
            for index in range(len(chunks)):
                pixels_per_group = upcoming.result()
                if index + 1 < len(chunks):
                    upcoming = prefetcher.submit(prepare, chunks[index + 1])
                for tasks, pixels in zip(groups, pixels_per_group):
                    for task in tasks:
                        task_logits, task_embedding = self.stages[task].run(pixels)
                        logits[task].append(task_logits[:, self.class_columns[task]])
                        embeddings[task].append(task_embedding)
        return ({task: np.concatenate(parts) for task, parts in logits.items()},
                {task: np.concatenate(parts) if parts else np.zeros((0, 0)) for task, parts in embeddings.items()})

    def combine(self, stage_probabilities: dict[str, np.ndarray]) -> list[CascadeResult]:
        """Route each image down the cascade and form the joint distribution over the seven ids."""
        return [
            self._combine_one({task: probabilities[i] for task, probabilities in stage_probabilities.items()})
            for i in range(len(stage_probabilities[DISEASE_DETECTOR.name]))
        ]

    def _combine_one(self, p: dict[str, np.ndarray]) -> CascadeResult:
        healthy, disease = p[DISEASE_DETECTOR.name]
        alzheimer, tumor = p[ALZHEIMER_VS_TUMOR.name]
        joint = {"healthy": float(healthy)}
        for task, branch in ((ALZHEIMER_SEVERITY, alzheimer), (TUMOR_TYPE, tumor)):
            for label, cls in task.class_of.items():
                joint[label] = float(disease * branch * p[task.name][task.classes.index(cls)])
        total = sum(joint.values())
        joint = {label: joint[label] / total for label in LABELS}

        def stage(task, decision_index: int) -> StageResult:
            probabilities = {c: float(v) for c, v in zip(task.classes, p[task.name])}
            return StageResult(task.name, task.title, probabilities, task.classes[decision_index])

        if healthy > self.healthy_threshold:
            stages = [stage(DISEASE_DETECTOR, 0)]
            label = "healthy"
        else:
            branch_task = ALZHEIMER_SEVERITY if alzheimer >= tumor else TUMOR_TYPE
            choice = int(np.argmax(p[branch_task.name]))
            stages = [stage(DISEASE_DETECTOR, 1), stage(ALZHEIMER_VS_TUMOR, 0 if branch_task is ALZHEIMER_SEVERITY else 1),
                      stage(branch_task, choice)]
            label = next(k for k, v in branch_task.class_of.items() if v == branch_task.classes[choice])
        return CascadeResult(label, LABELS[label], joint, stages)

    def unfamiliarity(self, embeddings: dict[str, np.ndarray]) -> np.ndarray | None:
        """Per image: how unlike the training scans it is (above 1: refused); None without a refusal check."""
        return None if self.familiarity is None else self.familiarity.unfamiliarity(embeddings)

    def with_refusals(self, results: list[CascadeResult], embeddings: dict[str, np.ndarray]) -> list[CascadeResult]:
        """``results`` with every input that does not look like a brain MRI slice replaced by a refusal."""
        if not results:
            return results
        scores = self.unfamiliarity(embeddings)
        if scores is None:
            return results
        return [
            CascadeResult(None, REFUSED_DISPLAY_NAME, {}, [], True, REFUSAL_REASON, float(score)) if score > 1
            else replace(result, unfamiliarity=float(score))
            for result, score in zip(results, scores)
        ]

    def predict_batch(self, images: Sequence[ImageSource], batch_size: int = 8,
                      refuse_unfamiliar: bool = True) -> list[CascadeResult]:
        """One result per image. Inputs that do not look like a brain MRI slice get ``refused=True``, a
        ``reason`` and no label, unless ``refuse_unfamiliar`` is False."""
        logits, embeddings = self.run_models(images, batch_size)
        results = self.combine(self.calibrated(logits))
        return self.with_refusals(results, embeddings) if refuse_unfamiliar else results

    def predict(self, image: ImageSource, refuse_unfamiliar: bool = True) -> CascadeResult:
        return self.predict_batch([image], refuse_unfamiliar=refuse_unfamiliar)[0]

    def predict_series(self, images: ImageSource | Sequence[ImageSource], batch_size: int = 8,
                       refuse_unfamiliar: bool = True) -> SeriesResult:
        """One answer for a patient from several slices: files, arrays, a multi-frame DICOM or a NIfTI volume
        (whose empty slices the loader skips). Each model's probabilities are pooled over the slices with
        ``pool_series``, then routed through the cascade exactly as for one slice. Refused slices (not
        brain-MRI-like) are left out of the pool; when every slice is refused, so is the series."""
        slices = load_slices(images)
        logits, embeddings = self.run_models(slices, batch_size)
        probabilities = self.calibrated(logits)
        per_slice = self.combine(probabilities)
        if refuse_unfamiliar:
            per_slice = self.with_refusals(per_slice, embeddings)
        answered = [index for index, result in enumerate(per_slice) if not result.refused]
        if not answered:  # every slice was refused, so every slice has a score
            reason = f"None of the {len(slices)} slices looks like a brain MRI slice. {REFUSAL_REASON}"
            worst = max(result.unfamiliarity for result in per_slice)
            return SeriesResult(None, REFUSED_DISPLAY_NAME, {}, [], True, reason, worst, slices=per_slice)
        pooled = pool_series({task: p[answered] for task, p in probabilities.items()})
        patient = self._combine_one({task: p[0] for task, p in pooled.items()})
        if len(answered) < len(slices):
            patient.reason = (f"{len(slices) - len(answered)} of {len(slices)} slices did not look like brain MRI "
                              "and were left out.")
        scores = [per_slice[index].unfamiliarity for index in answered]  # None without a check
        patient.unfamiliarity = None if None in scores else max(scores)
        return SeriesResult(**vars(patient), slices=per_slice)

    def explain(self, image: ImageSource, result: CascadeResult | None = None) -> Explanation:
        """Grad-CAM heatmap of the stage that decided ``result`` (default: this image's prediction), for the
        class it chose, over the image. Refused inputs have no decision to explain: ValueError."""
        loaded = load_image(image)
        return self.explain_batch([loaded], result or self.predict(loaded))[0]

    def explain_batch(self, images: Sequence[ImageSource], result: CascadeResult,
                      batch_size: int = 8) -> list[Explanation]:
        """Heatmaps of ``result``'s deciding stage and class over each image, e.g. every slice of a series
        for the patient answer."""
        if result.refused:
            raise ValueError("a refused input has no diagnosis to explain")
        deciding = result.stages[-1]
        stage = self.stages[deciding.name]
        target_index = int(stage.config.label2id[deciding.decision])
        explanations = []
        for start in range(0, len(images), batch_size):
            chunk = [load_image(image) for image in images[start : start + batch_size]]
            for image, heatmap in zip(chunk, grad_cam(stage.torch_model, stage.preprocess(chunk), target_index)):
                shown = display_size(image)
                explanations.append(Explanation(deciding.name, deciding.decision, *overlay_heatmap(shown, heatmap)))
        return explanations
