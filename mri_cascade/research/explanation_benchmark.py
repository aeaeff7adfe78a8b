"""The explanation benchmark: does the heatmap point at the evidence?

Judged on tumors with known boxes (``tumor_boxes`` beside the collections: figshare slices of each type, and the
Br35H tumors), on the slices the cascade answers with a tumor, per source, with 95 % intervals from a bootstrap over
near-duplicate clusters (``benchmark.with_interval``):

- **pointing game** (Zhang et al. 2016): the hottest pixel lies in a box grown by 5 % of the picture's side;
- **mass in box**: the heatmap's share inside the boxes, over the boxes' share of the picture;
- **deletion**: the fall in the answer's probability when the hottest 1-20 % of the head's pixels are painted over
  with the head's median grey, against painting over as many random pixels of the head;
- **sanity** (Adebayo et al. 2018): Spearman's rank correlation, over the head, between the map of the trained
  models and the map with the last blocks of the models explained re-initialised: a map that survives it shows the
  picture, not what the model learned;
- **time** per heatmap.

The slices fall into two parts by cluster (``CHOOSING_SHARE``): the methods are compared, and the shipped one
chosen, on the *choosing* part; the figures reported are those of the *reporting* part only. Alzheimer answers have
no boxes: their maps are judged on their mass inside the head and on the sanity test.
"""

from __future__ import annotations

import csv
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import spearmanr
from tqdm import tqdm

from ..cascade import Cascade
from ..explain import display_size
from ..images import head_mask, load_image
from ..labels import TUMOR_TYPE
from ..loading import load_stages
from ..results import CascadeResult
from .audit import fingerprint_images, near_duplicate_groups
from .benchmark import with_interval

POINTING_MARGIN = 0.05  # the box grows by this share of the picture's side on each edge (Zhang et al. 2016)
DELETION_SHARES = (0.01, 0.02, 0.05, 0.1, 0.2)  # shares of the head's pixels painted over
HEADLINE_DELETION = 0.1
DELETION_FLOOR = 0.001  # a random deletion counts as lowering the probability by at least this
RANDOM_DELETIONS = 3  # random draws averaged for the random baseline
CHOOSING_SHARE = 0.25  # share of clusters kept for choosing the method; never reported
CLUSTER_SIMILARITY = 0.95  # thumbnails at least this alike are one cluster (neighbouring slices of one patient)
SANITY_GRID = 32  # maps are compared on this grid over the picture, inside the head
RANDOMISED_BLOCKS = 2  # the last blocks re-initialised for the sanity test
SOURCES = ("figshare glioma", "figshare meningioma", "figshare pituitary", "br35h")


@dataclass
class BoxedSlice:
    source: str  # one of SOURCES
    name: str  # file stem
    path: Path
    boxes: list[tuple[float, float, float, float]]  # (left, top, right, bottom), shares of width and height


def read_yolo_boxes(path: Path) -> list[tuple[float, float, float, float]]:
    """YOLO lines ``class cx cy w h`` (shares of the picture) as (left, top, right, bottom) shares."""
    boxes = []
    for line in path.read_text().split("\n"):
        fields = line.split()
        if len(fields) == 5:
            cx, cy, w, h = map(float, fields[1:])
            boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return boxes


def boxed_slices(data_root: str | Path) -> list[BoxedSlice]:
    """Every slice of ``<data_root>/tumor_boxes`` with its boxes: figshare ``<type>/<n>.jpg`` beside ``<n>.txt``, and
    the Br35H tumors ``br35h/train/yes/<stem>.jpg`` with ``tumor_boxes/br35h/<stem>.txt``."""
    root = Path(data_root)
    slices = []
    for folder in sorted((root / "tumor_boxes" / "figshare").iterdir()):
        for picture in sorted(folder.glob("*.jpg")):
            slices.append(BoxedSlice(f"figshare {folder.name}", picture.stem, picture,
                                     read_yolo_boxes(picture.with_suffix(".txt"))))
    for label in sorted((root / "tumor_boxes" / "br35h").glob("*.txt")):
        picture = root / "br35h" / "train" / "yes" / f"{label.stem}.jpg"
        if picture.is_file():
            slices.append(BoxedSlice("br35h", label.stem, picture, read_yolo_boxes(label)))
    return [item for item in slices if item.boxes]


def cluster_parts(images: list[Image.Image], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each slice's near-duplicate cluster and whether it is in the choosing part: a cluster's part is drawn from
    the hash of the name of its first slice, so a patient's neighbouring slices stay on one side."""
    groups = near_duplicate_groups(fingerprint_images(images).thumbnails, CLUSTER_SIMILARITY)
    first = {}
    for group, name in zip(groups, names):
        first.setdefault(group, name)
    draw = {group: int(hashlib.sha256(name.encode()).hexdigest(), 16) % 1000 / 1000 for group, name in first.items()}
    return groups, np.array([draw[group] < CHOOSING_SHARE for group in groups])


def head_of(image: Image.Image) -> np.ndarray:
    return head_mask(np.asarray(image.convert("L"), dtype=np.float32))


def box_mask(shape: tuple[int, int], boxes, margin: float = 0.0) -> np.ndarray:
    """The union of ``boxes`` (shares) on a picture of ``shape``, each grown by ``margin`` of its side."""
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    for left, top, right, bottom in boxes:
        x0, x1 = round((left - margin) * width), round((right + margin) * width)
        y0, y1 = round((top - margin) * height), round((bottom + margin) * height)
        mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return mask


def points_at(heatmap: np.ndarray, boxes) -> bool:
    """The pointing game: the hottest pixel (the mean position of ties) lies in a box grown by 5 % of the side."""
    peak = np.argwhere(heatmap >= heatmap.max())
    y, x = np.round(peak.mean(axis=0)).astype(int)
    return bool(heatmap.max() > 0 and box_mask(heatmap.shape, boxes, POINTING_MARGIN)[y, x])


def mass_in(heatmap: np.ndarray, mask: np.ndarray) -> float:
    total = float(heatmap.sum())
    return float(heatmap[mask].sum()) / total if total > 0 else 0.0


def painted(image: Image.Image, pixels: np.ndarray) -> Image.Image:
    """``image`` in grey with ``pixels`` (a mask) set to the head's median grey."""
    grey = np.asarray(image.convert("L")).copy()
    head = head_of(image)
    grey[pixels] = int(np.median(grey[head])) if head.any() else 0
    return Image.fromarray(grey, mode="L")


def deletion_curve(cascade: Cascade, image: Image.Image, heatmap: np.ndarray, result: CascadeResult,
                   rng: np.random.Generator) -> dict[str, list[float]]:
    """The fall in the answer's joint probability with the hottest, and random, ``DELETION_SHARES`` of the head's
    pixels painted over (ties in the map broken at random)."""
    head = np.flatnonzero(head_of(image).ravel())
    order = head[np.lexsort((rng.random(len(head)), -heatmap.ravel()[head]))]
    pictures, kinds = [], []
    for share in DELETION_SHARES:
        count = max(1, round(share * len(head)))
        chosen = [order[:count]] + [rng.choice(head, count, replace=False) for _ in range(RANDOM_DELETIONS)]
        for index, flat in enumerate(chosen):
            mask = np.zeros(heatmap.size, dtype=bool)
            mask[flat] = True
            pictures.append(painted(image, mask.reshape(heatmap.shape)))
            kinds.append("map" if index == 0 else "random")
    answers = cascade.predict_batch(pictures, refuse_unfamiliar=False, operating_point=result.operating_point)
    base = result.probabilities[result.label]
    drops = np.array([base - answer.probabilities[result.label] for answer in answers]).reshape(len(DELETION_SHARES), -1)
    return {"map": drops[:, 0].tolist(), "random": drops[:, 1:].mean(axis=1).tolist()}


def randomise_last_blocks(model, blocks: int = RANDOMISED_BLOCKS) -> None:
    """Re-initialise, in place, the classifier and the last ``blocks`` blocks of an EfficientNet (with its top
    convolution) or a DINOv2/ViT encoder (with its last layer norm), as transformers initialises them."""
    import torch

    torch.manual_seed(0)
    base = model.base_model
    if hasattr(base, "encoder") and hasattr(base.encoder, "layer"):  # ViT family
        modules = list(base.encoder.layer[-blocks:]) + [base.layernorm]
    else:  # EfficientNet
        modules = list(base.encoder.blocks[-blocks:]) + [base.encoder.top_conv, base.encoder.top_bn]
    modules.append(model.classifier)
    for module in modules:
        for child in module.modules():
            if hasattr(child, "reset_parameters"):
                child.reset_parameters()


def randomised_cascade(models: str, tasks) -> Cascade:
    """The cascade on PyTorch with ``tasks``' models' last blocks re-initialised (``randomise_last_blocks``)."""
    stages = load_stages(models, backend="torch")
    for task in tasks:
        randomise_last_blocks(stages[task].run.model)
    return Cascade(stages)


def rank_correlation(first: np.ndarray, second: np.ndarray, head: np.ndarray) -> float:
    """Spearman's rho of two maps over the head, both taken to ``SANITY_GRID`` cells a side."""
    def grid(values: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(values.astype(np.float32), mode="F")
                          .resize((SANITY_GRID, SANITY_GRID), Image.Resampling.BOX))
    inside = grid(head.astype(np.float32)) > 0.5
    a, b = grid(first)[inside], grid(second)[inside]
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


Method = Callable[[Cascade, Image.Image, CascadeResult], np.ndarray]
METHODS: dict[str, Method] = {
    "grad-cam, deciding model": lambda c, image, r: c.explain_batch([image], r, method="grad-cam")[0].heatmap,
    "occlusion, answer": lambda c, image, r: c.explain_batch([image], r, method="occlusion")[0].heatmap,
}
SHIPPED_METHOD = "occlusion, answer"
"""The shipped method (``explain.DEFAULT_EXPLANATION``) and the one before it. The candidates compared on the
choosing part are in ``reports/history/explanation_methods.md``."""


def randomised_tasks(method: str, result: CascadeResult) -> list[str]:
    """The models whose learning a method's map reflects: those it explains."""
    names = [stage.name for stage in result.stages]
    return names if method.endswith("answer") else names[-1:]


def score_slices(cascade: Cascade, models: str, slices: list[BoxedSlice], methods: list[str],
                 sanity_every: int = 1, seed: int = 0, progress: bool = True) -> list[dict]:
    """Per slice answered with a tumor, and per method: pointing, mass in box, deletion curve, sanity, time."""
    rng = np.random.default_rng(seed)
    randomised: dict[tuple[str, ...], Cascade] = {}
    rows = []
    for index, item in enumerate(tqdm(slices, desc="explaining boxed slices", disable=not progress)):
        image = load_image(item.path)
        result = cascade.predict(image)
        if result.refused or not result.label.startswith("tumor_"):
            rows.append({"source": item.source, "name": item.name, "answered_tumor": False})
            continue
        shown = display_size(image)
        boxes = box_mask(shown.size[::-1], item.boxes)
        row = {"source": item.source, "name": item.name, "answered_tumor": True, "label": result.label,
               "box_share": float(boxes.mean()), "methods": {}}
        for method in methods:
            started = time.perf_counter()
            heatmap = METHODS[method](cascade, image, result)
            figures = {"seconds": time.perf_counter() - started, "points": points_at(heatmap, item.boxes),
                       "mass_in_box": mass_in(heatmap, boxes),
                       "deletion": deletion_curve(cascade, shown, heatmap, result, rng)}
            if index % sanity_every == 0:
                tasks = tuple(randomised_tasks(method, result))
                if tasks not in randomised:
                    randomised[tasks] = randomised_cascade(models, tasks)
                figures["sanity_rho"] = rank_correlation(heatmap, METHODS[method](randomised[tasks], image, result),
                                                         head_of(shown))
            row["methods"][method] = figures
        rows.append(row)
    return rows


def mean_of(values: np.ndarray) -> Callable[[np.ndarray], float]:
    return lambda indices: float(values[indices].mean())


def ratio_of_means(numerator: np.ndarray, denominator: np.ndarray) -> Callable[[np.ndarray], float]:
    """Mean of ``numerator`` over mean of ``denominator``, the latter floored at ``DELETION_FLOOR``: a random
    deletion that lowers the probability by nothing (or raises it) counts as lowering it by the floor."""
    return lambda indices: float(numerator[indices].mean() / max(denominator[indices].mean(), DELETION_FLOOR))


def summarise(rows: list[dict], clusters: dict[str, int], methods: list[str]) -> dict:
    """Per method and source (and all sources): the figures with 95 % intervals over clusters."""
    answered = [row for row in rows if row["answered_tumor"]]
    report = {"slices": len(rows), "answered_tumor": len(answered), "methods": {}}
    cluster_ids = np.array([clusters[row["source"] + row["name"]] for row in answered])
    share = np.array([row["box_share"] for row in answered])
    at = DELETION_SHARES.index(HEADLINE_DELETION)
    for method in methods:
        per = [row["methods"][method] for row in answered]
        points = np.array([f["points"] for f in per], dtype=float)
        mass = np.array([f["mass_in_box"] for f in per])
        map_drop = np.array([f["deletion"]["map"][at] for f in per])
        random_drop = np.array([f["deletion"]["random"][at] for f in per])
        rho = np.array([f.get("sanity_rho", np.nan) for f in per])
        seconds = np.array([f["seconds"] for f in per])
        by_source = {}
        for source in (*SOURCES, "all"):
            members = np.array([source in ("all", row["source"]) for row in answered], dtype=bool)
            sane = members & np.isfinite(rho)
            by_source[source] = {
                "pointing": with_interval(mean_of(points), members, cluster_ids),
                "mass_in_box": with_interval(mean_of(mass), members, cluster_ids),
                "box_share": float(share[members].mean()) if members.any() else None,
                "mass_over_share": with_interval(ratio_of_means(mass, share), members, cluster_ids),
                "deletion_map_at_10": with_interval(mean_of(map_drop), members, cluster_ids),
                "deletion_random_at_10": with_interval(mean_of(random_drop), members, cluster_ids),
                "deletion_ratio_at_10": with_interval(ratio_of_means(map_drop, random_drop), members, cluster_ids),
                "sanity_rho_median": float(np.median(rho[sane])) if sane.any() else None,
                "sanity_slices": int(sane.sum()),
            }
        curve = {kind: np.mean([f["deletion"][kind] for f in per], axis=0).tolist() for kind in ("map", "random")}
        report["methods"][method] = {"by_source": by_source, "deletion_curve": {"shares": list(DELETION_SHARES), **curve},
                                     "seconds_p50": float(np.median(seconds)), "seconds_p90": float(np.quantile(seconds, 0.9))}
    return report


def alzheimer_figures(cascade: Cascade, models: str, data_root: str | Path, count: int, method: str,
                      progress: bool = True) -> dict:
    """On up to ``count`` Alzheimer slices (one per subject of ``subjects.csv``, demented classes first) that the
    cascade answers with Alzheimer's: the map's mass inside the head and the sanity test's rank correlation."""
    root = Path(data_root) / "alzheimer"
    with open(root / "subjects.csv", newline="") as stream:
        rows = [row for row in csv.DictReader(stream) if row["path"].startswith("train/")]
    one_per_subject = {}
    for row in sorted(rows, key=lambda row: (row["subject"].startswith("NonDemented"), row["subject"], row["path"])):
        one_per_subject.setdefault(row["subject"], row["path"])
    randomised, inside, rhos, answered = {}, [], [], 0
    for path in tqdm(list(one_per_subject.values()), desc="explaining Alzheimer slices", disable=not progress):
        if answered == count:
            break
        image = load_image(root / path)
        result = cascade.predict(image)
        if result.refused or not result.label.startswith("alzheimer_"):
            continue
        answered += 1
        heatmap = METHODS[method](cascade, image, result)
        head = head_of(display_size(image))
        inside.append(mass_in(heatmap, head))
        tasks = tuple(randomised_tasks(method, result))
        if tasks not in randomised:
            randomised[tasks] = randomised_cascade(models, tasks)
        rhos.append(rank_correlation(heatmap, METHODS[method](randomised[tasks], image, result), head))
    inside, rhos = np.array(inside), np.array(rhos)
    return {"slices": answered, "mass_inside_head_mean": float(inside.mean()) if answered else None,
            "mass_inside_head_min": float(inside.min()) if answered else None,
            "slices_at_least_95_inside": int((inside >= 0.95).sum()),
            "sanity_rho_median": float(np.median(rhos)) if answered else None}


def run_explanation_benchmark(models: str, data_root: str | Path, part: str = "reporting",
                              methods: list[str] | None = None, limit_per_source: int | None = None,
                              sanity_every: int = 1, alzheimer_slices: int = 0) -> dict:
    """Score ``methods`` (default: all) on the ``part`` ("choosing" or "reporting") of the boxed slices, at most
    ``limit_per_source`` per source (default: all), the sanity test on every ``sanity_every``-th; and the shipped
    method on ``alzheimer_slices`` Alzheimer answers (``alzheimer_figures``)."""
    methods = methods or list(METHODS)
    slices = boxed_slices(data_root)
    images = [Image.open(item.path) for item in slices]
    groups, choosing = cluster_parts(images, [item.source + item.name for item in slices])
    keep = choosing if part == "choosing" else ~choosing
    picked, counts = [], dict.fromkeys(SOURCES, 0)
    for item, kept in zip(slices, keep):
        if kept and (limit_per_source is None or counts[item.source] < limit_per_source):
            picked.append(item)
            counts[item.source] += 1
    clusters = {item.source + item.name: int(group) for item, group in zip(slices, groups)}
    cascade = Cascade.from_pretrained(models)
    rows = score_slices(cascade, models, picked, methods, sanity_every)
    report = summarise(rows, clusters, methods)
    report.update(part=part, slices_by_source=counts, tumor_type_classes=list(TUMOR_TYPE.classes),
                  clusters_in_part=len({clusters[item.source + item.name] for item in picked}))
    if alzheimer_slices:
        report["alzheimer"] = alzheimer_figures(cascade, models, data_root, alzheimer_slices, SHIPPED_METHOD)
    return report


def print_explanation_benchmark(report: dict) -> None:
    def cell(figure: dict, percent: bool = True) -> str:
        if figure["value"] is None:
            return "-"
        scale, unit = (100, " %") if percent else (1, "x")
        text = f"{scale * figure['value']:.1f}{unit}"
        return text + (f" ({scale * figure['low']:.1f}-{scale * figure['high']:.1f})" if figure["low"] is not None else "")

    print(f"{report['part']} part: {report['answered_tumor']} of {report['slices']} boxed slices answered with a tumor")
    for method, figures in report["methods"].items():
        print(f"\n{method}: {figures['seconds_p50']:.2f} s a heatmap (p50), {figures['seconds_p90']:.2f} s (p90)")
        for source, row in figures["by_source"].items():
            rho = "-" if row["sanity_rho_median"] is None else f"{row['sanity_rho_median']:.3f}"
            print(f"  {source:<20} pointing {cell(row['pointing']):<20} mass/share {cell(row['mass_over_share'], False):<20}"
                  f" deletion 10 % map/random {cell(row['deletion_ratio_at_10'], False):<22}"
                  f" sanity rho {rho} ({row['sanity_slices']} slices)")
    if "alzheimer" in report:
        print(f"\nAlzheimer answers: {report['alzheimer']}")
