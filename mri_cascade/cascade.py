"""The four-model cascade: healthy or disease, Alzheimer's or tumor, then severity or type."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
from PIL import Image
from tqdm import tqdm

from .calibration import TEMPERATURE_KEY, softmax
from .decisions import (
    DEFAULT_OPERATING_POINT,
    MIN_ANSWERED_SHARE,
    calls_healthy,
    check_operating_point,
    decide,
    pool_series,
    refuses,
    scan_families,
    series_too_sparse,
)
from .explain import (
    DEFAULT_EXPLANATION,
    EXPLANATION_METHODS,
    Explanation,
    display_size,
    grad_cam,
    occluded_batches,
    overlay_heatmap,
    two_level_occlusion,
    uncrop,
)
from .familiarity import CT_REFUSAL_REASON, REFUSAL_REASON, FamiliarityCheck
from .images import ImageSource, crop_to_head, head_box, head_mask, load_image, load_slices
from .labels import ALZHEIMER_VS_TUMOR, DISEASE_DETECTOR, TASKS
from .loading import SERIES_OPERATING_POINTS_KEY, Stage, load_familiarity, load_stages, read_operating_points
from .medical import FROM_VOLUME_KEY, NOT_BRAIN_MRI_KEY, ORIENTATION_HINT
from .modality import pixel_features
from .results import REFUSED_DISPLAY_NAME, CascadeResult, SeriesResult

HEADER_REFUSAL = "MRI Cascade reads only 2-D brain MRI slices, so it gives no diagnosis."


class Cascade:
    def __init__(self, stages: dict[str, Stage], familiarity: FamiliarityCheck | None = None,
                 operating_point: str = DEFAULT_OPERATING_POINT):
        missing = set(TASKS) - set(stages)
        if missing:
            raise ValueError(f"cascade needs all four models; missing {sorted(missing)}")
        self.stages = stages
        self.familiarity = familiarity
        detector_config = stages[DISEASE_DETECTOR.name].config
        self.operating_points = read_operating_points(detector_config)
        self.series_operating_points = (read_operating_points(detector_config, SERIES_OPERATING_POINTS_KEY)
                                        or self.operating_points)
        self.operating_point = check_operating_point(operating_point)
        # tasks whose image processors agree share one preprocessing pass
        self.preprocessing_groups: dict[str, list[str]] = {}
        for task, stage in stages.items():
            self.preprocessing_groups.setdefault(stage.preprocessing_key, []).append(task)
        # logit columns in each task's class order
        self.class_columns = {task: [stage.config.label2id[c] for c in TASKS[task].classes] for task, stage in stages.items()}

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike | None = None, backend: str = "auto",
                        operating_point: str = DEFAULT_OPERATING_POINT) -> Cascade:
        """Load the four models from ``source``: a local directory holding one folder per task, or a Hub
        prefix such as ``org/mri`` (``org/mri-disease-detector``, ...). None means ``$MRI_CASCADE_MODELS``,
        else the shipped ``models/``. ``backend``: "auto" (ONNX Runtime where a fresh export exists),
        "onnx" or "torch". Weights load from safetensors or ONNX only; no remote code runs. The refusal check
        (``familiarity.safetensors`` beside the disease detector) loads too when present. ``operating_point``
        ("balanced" or "screening") is the default for every call; each call may name another."""
        check_operating_point(operating_point)
        return cls(load_stages(source, backend), load_familiarity(source), operating_point)

    def stage_probabilities(self, images: Sequence[ImageSource], batch_size: int = 8,
                            progress: str | None = None) -> dict[str, np.ndarray]:
        """Every model's class probabilities for every image, columns in each task's class order, each model's
        logits divided by the temperature its config stores (1 if none)."""
        return self.calibrated(self.stage_logits(images, batch_size, progress=progress))

    def calibrated(self, logits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {task: softmax(values, float(getattr(self.stages[task].config, TEMPERATURE_KEY, 1.0)))
                for task, values in logits.items()}

    def stage_logits(self, images: Sequence[ImageSource], batch_size: int = 8, tasks: Collection[str] | None = None,
                     progress: str | None = None) -> dict[str, np.ndarray]:
        """Every model's (or only ``tasks``') logits for every image, columns in each task's class order."""
        return self.run_models(images, batch_size, tasks=tasks, progress=progress)[0]

    def run_models(self, images: Sequence[ImageSource], batch_size: int = 8, header_notes: list | None = None,
                   pixel_rows: list | None = None, tasks: Collection[str] | None = None,
                   progress: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Every model's logits (columns in each task's class order) and image embeddings for every image.

        Images are preprocessed once per distinct image-processor setting, then every model runs on each batch,
        the ONNX ones side by side (``Stage.start_runs``). ``tasks``, when given, runs only those models.
        ``header_notes``, when given, receives each image's DICOM header note (why its header says it is not a
        brain MRI, else None), in order; ``pixel_rows`` each image's ``modality.pixel_features`` (for the CT test).
        ``progress``, when given, is the description of a progress bar (tqdm, on stderr) over the images.
        """
        wanted = list(TASKS) if tasks is None else [task for task in TASKS if task in tasks]
        groups = [members for group in self.preprocessing_groups.values()
                  if (members := [task for task in group if task in wanted])]

        def prepare(chunk: Sequence[ImageSource]) -> list[np.ndarray]:
            loaded = [load_image(image) for image in chunk]
            if header_notes is not None:
                header_notes.extend(image.info.get(NOT_BRAIN_MRI_KEY) for image in loaded)
            if pixel_rows is not None:
                pixel_rows.extend(pixel_features(image) for image in loaded)
            return [self.stages[tasks[0]].preprocess(loaded) for tasks in groups]

        logits: dict[str, list[np.ndarray]] = {task: [np.zeros((0, len(TASKS[task].classes)))] for task in wanted}
        embeddings: dict[str, list[np.ndarray]] = {task: [] for task in wanted}
        chunks = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
        # decode and resize the next chunk while the models run on this one (both release the GIL)
        with ThreadPoolExecutor(max_workers=1) as prefetcher, \
                tqdm(total=len(images), desc=progress, unit="scan", disable=progress is None) as bar:
            upcoming = prefetcher.submit(prepare, chunks[0]) if chunks else None
            for index in range(len(chunks)):
                pixels_per_group = upcoming.result()
                if index + 1 < len(chunks):
                    upcoming = prefetcher.submit(prepare, chunks[index + 1])
                runs = {task: self.stages[task].start_runs(pixels)
                        for tasks, pixels in zip(groups, pixels_per_group) for task in tasks}
                for task, task_runs in runs.items():
                    task_logits, task_embedding = self.stages[task].merge(task_runs)
                    logits[task].append(task_logits[:, self.class_columns[task]])
                    embeddings[task].append(task_embedding)
                bar.update(len(chunks[index]))
        return ({task: np.concatenate(parts) for task, parts in logits.items()},
                {task: np.concatenate(parts) if parts else np.zeros((0, 0)) for task, parts in embeddings.items()})

    def thresholds(self, operating_point: str | None = None, series: bool = False) -> dict[str, float]:
        """Family -> healthy threshold at ``operating_point`` (default: the cascade's own), for one slice or, with
        ``series``, for a patient's pooled series."""
        points = self.series_operating_points if series else self.operating_points
        return points[check_operating_point(operating_point or self.operating_point)]

    def combine(self, stage_probabilities: dict[str, np.ndarray], operating_point: str | None = None,
                thresholds: dict[str, float] | None = None) -> list[CascadeResult]:
        """Route each image down the cascade and form the joint distribution over the seven ids. The healthy
        thresholds are those of ``operating_point`` (default: the cascade's own), or ``thresholds`` when given
        (family -> threshold, for fitting them; the results then still carry the point's name)."""
        point = check_operating_point(operating_point or self.operating_point)
        detector = stage_probabilities[DISEASE_DETECTOR.name]
        families = scan_families(stage_probabilities[ALZHEIMER_VS_TUMOR.name])
        limits = thresholds or self.operating_points[point]
        healthy = calls_healthy(detector[:, 0], families, limits)
        return [
            decide({task: probabilities[i] for task, probabilities in stage_probabilities.items()},
                   bool(healthy[i]), point, float(limits[families[i]]))
            for i in range(len(detector))
        ]

    def unfamiliarity(self, embeddings: dict[str, np.ndarray]) -> np.ndarray | None:
        """Per image: how unlike the training scans it is (above 1: refused); None without a refusal check."""
        return None if self.familiarity is None else self.familiarity.unfamiliarity(embeddings)

    def pixel_rows_wanted(self, refuse_unfamiliar: bool) -> list | None:
        """A list for ``run_models`` to fill with pixel features when the refusal check has a CT test to read them,
        else None: they cost a few milliseconds a scan."""
        wanted = refuse_unfamiliar and self.familiarity is not None and self.familiarity.ct_weights is not None
        return [] if wanted else None

    def with_refusals(self, results: list[CascadeResult], embeddings: dict[str, np.ndarray],
                      header_notes: Sequence[str | None] | None = None,
                      pixel_rows: Sequence[np.ndarray] | None = None) -> list[CascadeResult]:
        """``results`` with every input that does not look like a brain MRI slice replaced by a refusal: too
        unfamiliar to the refusal check, or looking like a head CT to it (``decisions.refuses``), or with a
        DICOM header note (``run_models``) that names another modality or body part, whose words then lead the
        reason. A refused image that looks like CT is told so. ``pixel_rows``: each image's pixel features (for the CT
        test; without them it does not run)."""
        if not results:
            return results
        scores = self.unfamiliarity(embeddings)
        notes = header_notes or [None] * len(results)
        ct_looks = (self.familiarity.looks_like_ct(embeddings, np.stack(pixel_rows))
                    if scores is not None and pixel_rows is not None else np.zeros(len(results), bool))
        refused = np.zeros(len(results), bool) if scores is None else refuses(scores, ct_looks)
        refined = []
        for index, result in enumerate(results):
            score = None if scores is None else float(scores[index])
            if notes[index] or refused[index]:
                reason = (f"{notes[index]} {HEADER_REFUSAL}" if notes[index]
                          else CT_REFUSAL_REASON if ct_looks[index] else REFUSAL_REASON)
                refined.append(CascadeResult(None, REFUSED_DISPLAY_NAME, {}, [], True, reason, score,
                                             result.operating_point))
            else:
                refined.append(replace(result, unfamiliarity=score))
        return refined

    def predict_batch(self, images: Sequence[ImageSource], batch_size: int = 8, refuse_unfamiliar: bool = True,
                      operating_point: str | None = None, progress: str | None = None) -> list[CascadeResult]:
        """One result per image, decided at ``operating_point`` (default: the cascade's own). Inputs that do
        not look like a brain MRI slice get ``refused=True``, a ``reason`` and no label, unless
        ``refuse_unfamiliar`` is False. ``progress``: as in ``run_models``."""
        check_operating_point(operating_point or self.operating_point)
        notes: list[str | None] = []
        pixel_rows = self.pixel_rows_wanted(refuse_unfamiliar)
        logits, embeddings = self.run_models(images, batch_size, header_notes=notes, pixel_rows=pixel_rows,
                                             progress=progress)
        results = self.combine(self.calibrated(logits), operating_point)
        return self.with_refusals(results, embeddings, notes, pixel_rows) if refuse_unfamiliar else results

    def predict(self, image: ImageSource, refuse_unfamiliar: bool = True,
                operating_point: str | None = None) -> CascadeResult:
        return self.predict_batch([image], refuse_unfamiliar=refuse_unfamiliar, operating_point=operating_point)[0]

    def predict_series(self, images: ImageSource | Sequence[ImageSource], batch_size: int = 8,
                       refuse_unfamiliar: bool = True, operating_point: str | None = None) -> SeriesResult:
        """One answer for a patient from several slices: files, arrays, a multi-frame DICOM or a NIfTI volume
        (whose empty slices the loader skips). Each model's probabilities are pooled over the slices with
        ``pool_series``, then routed through the cascade as one slice is, with the series thresholds. Refused slices (not
        brain-MRI-like) are left out of the pool; when too many are (``decisions.series_too_sparse``), the series is
        refused, with a hint at the orientation when its slices were cut from a volume. When answered
        slices on their own disagree with the patient answer, ``reason`` says how many and what they say."""
        point = check_operating_point(operating_point or self.operating_point)
        slices = load_slices(images)
        notes: list[str | None] = []
        pixel_rows = self.pixel_rows_wanted(refuse_unfamiliar)
        logits, embeddings = self.run_models(slices, batch_size, header_notes=notes, pixel_rows=pixel_rows)
        probabilities = self.calibrated(logits)
        per_slice = self.combine(probabilities, point)
        if refuse_unfamiliar:
            per_slice = self.with_refusals(per_slice, embeddings, notes, pixel_rows)
        answered = [index for index, result in enumerate(per_slice) if not result.refused]
        if series_too_sparse(len(answered), len(slices)):
            # each distinct reason once
            reasons = " ".join(dict.fromkeys(result.reason for result in per_slice if result.refused))
            if answered:
                reason = (f"Only {len(answered)} of {len(slices)} slices look like brain MRI slices; a series is "
                          f"answered only when at least {MIN_ANSWERED_SHARE:.0%} of its slices do. {reasons}")
            else:
                reason = f"None of the {len(slices)} slices looks like a brain MRI slice. {reasons}"
            if any(image.info.get(FROM_VOLUME_KEY) for image in slices):
                reason += f" {ORIENTATION_HINT}"
            scores = [result.unfamiliarity for result in per_slice]
            worst = None if None in scores else max(scores)
            return SeriesResult(None, REFUSED_DISPLAY_NAME, {}, [], True, reason, worst, point, slices=per_slice)
        pooled = pool_series({task: p[answered] for task, p in probabilities.items()})
        (patient,) = self.combine(pooled, point, thresholds=self.thresholds(point, series=True))
        remarks = []
        if len(answered) < len(slices):
            remarks.append(f"{len(slices) - len(answered)} of {len(slices)} slices did not look like brain MRI "
                         "and were left out.")
        dissent = Counter(per_slice[index].display_name for index in answered if per_slice[index].label != patient.label)
        if dissent:
            said = ", ".join(f"{name} ({count})" for name, count in dissent.most_common())
            remarks.append(f"{sum(dissent.values())} of {len(answered)} answered slices on their own say otherwise: {said}.")
        patient.reason = " ".join(remarks) or None
        scores = [per_slice[index].unfamiliarity for index in answered]  # None without a check
        patient.unfamiliarity = None if None in scores else max(scores)
        return SeriesResult(**vars(patient), slices=per_slice)

    def explain(self, image: ImageSource, result: CascadeResult | None = None,
                method: str = DEFAULT_EXPLANATION) -> Explanation:
        """Heatmap of the evidence for ``result`` (default: this image's prediction) over the image (see
        ``explain_batch``). Refused inputs have no decision to explain: ValueError."""
        loaded = load_image(image)
        return self.explain_batch([loaded], result or self.predict(loaded), method=method)[0]

    def explain_batch(self, images: Sequence[ImageSource], result: CascadeResult, batch_size: int = 8,
                      method: str = DEFAULT_EXPLANATION) -> list[Explanation]:
        """Heatmaps of the evidence for ``result`` over each image, e.g. every slice of a series for the patient
        answer. ``method`` "occlusion": how much the answer's probability falls when each part of the head is painted
        over (``occlusion_heatmap``); "grad-cam": Grad-CAM of the deciding model for its class."""
        if result.refused:
            raise ValueError("a refused input has no diagnosis to explain")
        if method not in EXPLANATION_METHODS:
            raise ValueError(f"unknown explanation method {method!r}; choose one of {', '.join(EXPLANATION_METHODS)}")
        deciding = result.stages[-1]
        explanations = []
        for start in range(0, len(images), batch_size):
            chunk = [load_image(image) for image in images[start : start + batch_size]]
            if method == "occlusion":
                maps = [self.occlusion_heatmap(image, result) for image in chunk]
                cropped = self.crops_to_head(result)
            else:
                stage = self.stages[deciding.name]
                target_index = int(stage.config.label2id[deciding.decision])
                maps = list(grad_cam(stage.torch_model, stage.preprocess(chunk), target_index))
                cropped = stage.crop_to_head
            for image, heatmap in zip(chunk, maps):
                shown = display_size(image)
                box = head_box(image) if cropped else None
                if box is not None:  # the map covers the head's crop: put it back where the head is
                    heatmap = uncrop(heatmap, box, image, shown)
                explanations.append(Explanation(method, deciding.name, deciding.decision, *overlay_heatmap(shown, heatmap)))
        return explanations

    def crops_to_head(self, result: CascadeResult) -> bool:
        """Whether the models on ``result``'s path read the head's crop (the frame occlusion windows are laid over);
        a ValueError when some do and some do not."""
        crops = {self.stages[decided.name].crop_to_head for decided in result.stages}
        if len(crops) > 1:
            raise ValueError("the models on the answer's path frame the slice differently: some crop it to the head")
        return crops.pop()

    def occlusion_heatmap(self, image: Image.Image, result: CascadeResult) -> np.ndarray:
        """Occlusion sensitivity (``explain.two_level_occlusion``): the fall in the answer's
        joint probability (the product of the decisions along its path, as ``decide`` forms it) when each window
        of the head is painted over with the head's median grey, background left black. Every model on the path
        runs on every window. The map covers the head's crop, or the whole slice for models that read it whole, and
        is zero off the head (no pixel there was painted over)."""
        path = result.stages
        framed = crop_to_head(image) if self.crops_to_head(result) else image
        grey = np.asarray(framed.convert("L"))
        head = head_mask(grey)
        median = int(np.median(grey[head])) if head.any() else 0
        inputs, fills, heads = {}, {}, {}
        for decided in path:
            stage = self.stages[decided.name]
            inputs[decided.name] = stage.preprocess([image])
            height, width = inputs[decided.name].shape[-2:]
            fills[decided.name] = stage.resize_and_normalise([Image.new("L", (4, 4), median)])[0, :, 0, 0]
            heads[decided.name] = np.asarray(Image.fromarray(head).resize((width, height), Image.Resampling.NEAREST))

        def score(windows: list | None) -> np.ndarray:
            """The answer's joint probability with each window occluded (None: the image as it is)."""
            batches = inputs if windows is None else occluded_batches(inputs, fills, heads, windows)
            scores = np.ones(len(next(iter(batches.values()))))
            for decided in path:
                logits = self.stages[decided.name].logits_and_embedding(batches[decided.name])[0]
                probabilities = self.calibrated({decided.name: logits[:, self.class_columns[decided.name]]})
                scores *= probabilities[decided.name][:, TASKS[decided.name].classes.index(decided.decision)]
            return scores

        heatmap = two_level_occlusion(score, float(score(None)[0]))
        # only the head's pixels were painted over: heat stays on them, not on the background a window also covered
        inside = Image.fromarray(head).resize(heatmap.shape[::-1], Image.Resampling.BOX)
        return heatmap * (np.asarray(inside.convert("F")) / 255 > 0.5)
