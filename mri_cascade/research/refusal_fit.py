"""Fitting the refusal check (``familiarity.FamiliarityCheck``) on a cascade's embeddings, and measuring what it
refuses: validation and test scans, generated non-MRI pictures, real non-brain medical images, the collections' CT."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..decisions import refuses
from ..familiarity import DEFAULT_COMPONENTS, FAMILIARITY_FILE, LIMIT_TOLERANCE, FamiliarityCheck, joined_features
from ..labels import TASKS
from ..loading import model_weights_sha256
from ..modality import PIXEL_FEATURES
from .data import SPLIT_SEED, VALIDATION_FRACTION


def weights_sha256(models_dir) -> dict[str, str]:
    """Task -> its weights' SHA-256 (``runtime.weights_sha256``) in a local models directory: what a check is
    fitted on."""
    return {task: model_weights_sha256(str(Path(models_dir) / task)) for task in TASKS}


def fit_familiarity(train_embeddings: dict[str, np.ndarray], validation_embeddings: dict[str, np.ndarray],
                    weights_sha256: dict[str, str], components: int = DEFAULT_COMPONENTS,
                    other_embeddings: dict[str, np.ndarray] | None = None,
                    train_pixels: np.ndarray | None = None, ct: Features | None = None,
                    not_ct: Features | None = None) -> FamiliarityCheck:
    """Principal subspace of the training scans' features, its limit the largest validation residual; and, when
    ``other_embeddings`` (pictures that are not brain MRI slices) are given, the logistic regression that tells
    them from the training scans, its limit halfway (in log-odds) between the highest P(not a brain MRI slice) among
    validation scans and the lowest among those pictures. With ``ct`` (head CT embeddings and pixel features) and
    ``train_pixels`` (the training scans' pixel features), the CT test too (``fit_ct_test``), with ``not_ct``
    (pictures that are neither CT nor brain MRI) on the side of what is not CT."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    tasks = sorted(train_embeddings)
    features = joined_features(train_embeddings, tasks)
    validation = joined_features(validation_embeddings, tasks)
    pca = PCA(n_components=min(components, *features.shape), random_state=0).fit(features)
    check = FamiliarityCheck(tasks, pca.mean_, pca.components_, 1.0, weights_sha256)
    # inclusive: the least familiar validation scan (and any copy of it) must pass once stored in float32
    check.limit = float(check.residual_ratio(validation).max()) * (1 + LIMIT_TOLERANCE)
    if other_embeddings is not None:
        others = joined_features(other_embeddings, tasks)
        model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000).fit(
            np.concatenate([features, others]), np.r_[np.zeros(len(features)), np.ones(len(others))])
        check.other_weights, check.other_bias = model.coef_[0].astype(np.float64), float(model.intercept_[0])
        # the widest margin: halfway, in log-odds, between the least brain-like validation scan and the most
        # brain-like development picture, so that scans a little unlike validation ones still pass
        logit = lambda x: x @ check.other_weights + check.other_bias  # noqa: E731
        highest_validation = float(logit(validation).max())
        # without a margin, a hair above the least brain-like validation scan, in log-odds (never past P = 1)
        limit = max((highest_validation + float(logit(others).min())) / 2, highest_validation + LIMIT_TOLERANCE)
        check.other_limit = float(1 / (1 + np.exp(-limit)))
    if ct is not None:
        fit_ct_test(check, Features(train_embeddings, train_pixels), ct, not_ct)
    return check


@dataclass
class Features:
    """What the refusal check reads of a set of images: each model's embeddings, and the pixel features."""

    embeddings: dict[str, np.ndarray]
    pixels: np.ndarray  # (images, modality.PIXEL_FEATURES)

    def __len__(self) -> int:
        return len(self.pixels)

    def select(self, rows) -> Features:
        return Features({task: values[rows] for task, values in self.embeddings.items()}, self.pixels[rows])

    @staticmethod
    def join(parts: list[Features]) -> Features:
        return Features({task: np.concatenate([part.embeddings[task] for part in parts]) for task in parts[0].embeddings},
                        np.concatenate([part.pixels for part in parts]))


CT_REGULARISATION = 1.0  # the CT test's logistic regression: inverse L2 strength (scikit-learn's C)
CT_MRI_QUANTILE = 0.999
"""The CT test's limit: this quantile of the training MRI's out-of-fold P(head CT) (at least 1/2), so that about one
training MRI slice in a thousand would be refused by it."""


def fit_ct_test(check: FamiliarityCheck, mri: Features, ct: Features, not_ct: Features | None = None) -> None:
    """Fit ``check``'s CT test in place: the pixel features' standardisation, a class-balanced logistic regression of
    head CT against brain MRI and ``not_ct`` (other pictures, so that a photo is not called a CT), and its limit from
    5-fold out-of-fold scores of the MRI."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    negatives = Features.join([mri, not_ct]) if not_ct is not None and len(not_ct) else mri
    pixels = np.concatenate([negatives.pixels, ct.pixels]).astype(np.float64)
    check.pixel_mean, check.pixel_scale = pixels.mean(axis=0), pixels.std(axis=0) + 1e-6
    features = np.concatenate([check.ct_features(negatives.embeddings, negatives.pixels),
                               check.ct_features(ct.embeddings, ct.pixels)])
    is_ct = np.r_[np.zeros(len(negatives)), np.ones(len(ct))]
    model = LogisticRegression(C=CT_REGULARISATION, class_weight="balanced", max_iter=5000)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    out_of_fold = cross_val_predict(model, features, is_ct, cv=folds, method="predict_proba")[:, 1]
    model.fit(features, is_ct)
    check.ct_weights, check.ct_bias = model.coef_[0].astype(np.float64), float(model.intercept_[0])
    check.ct_limit = max(0.5, float(np.quantile(out_of_fold[:len(mri)], CT_MRI_QUANTILE)))


def ct_refused(check: FamiliarityCheck, images: Features) -> np.ndarray:
    return check.looks_like_ct(images.embeddings, images.pixels)


def leave_one_ct_source_out(mri_train: Features, mri_judged: dict[str, Features], folds: dict[str, dict],
                            not_ct: Features | None = None, whole: FamiliarityCheck | None = None) -> dict:
    """The CT test fitted again for each fold of ``folds`` (name -> {"train": CT Features it learns from,
    "unseen": {name: CT Features it never saw}}) on ``mri_train``'s MRI, and scored: the share of each unseen CT
    set it refuses, with a 95 % Wilson interval, and the share of each ``mri_judged`` set of MRI it refuses. With
    ``whole`` (the fitted check, whose other tests never learned from ``head_ct``), also what the whole rule refuses:
    unfamiliarity above 1 or the fold's CT test."""
    from scipy.stats import binomtest

    def share(refused: np.ndarray) -> dict:
        low, high = binomtest(int(refused.sum()), len(refused)).proportion_ci(method="wilson")
        return {"images": len(refused), "refused": int(refused.sum()), "share": float(refused.mean()),
                "low": float(low), "high": float(high)}

    report = {}
    for fold, parts in folds.items():
        # a check with only the CT test: its other tests are not fitted again for each fold
        check = FamiliarityCheck([*sorted(mri_train.embeddings)], np.zeros(1), np.zeros((0, 1)), 1.0, {})
        fit_ct_test(check, mri_train, parts["train"], not_ct)
        report[fold] = {"ct_training_images": len(parts["train"]), "limit": check.ct_limit,
                        "unseen_ct": {name: share(ct_refused(check, images)) for name, images in parts["unseen"].items()},
                        "mri": {name: share(ct_refused(check, images)) for name, images in mri_judged.items()}}
        if whole is not None:
            report[fold]["unseen_ct_whole_check"] = {
                name: share(refuses(whole.unfamiliarity(images.embeddings), ct_refused(check, images)))
                for name, images in parts["unseen"].items()}
    return report


def _refused_share(refused: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> dict:
    """Overall and per-group count and share of ``refused``, with the least unfamiliarity of each group."""
    share = {"images": len(refused), "refused": int(refused.sum()), "refused_share": float(refused.mean()),
             "least_unfamiliarity": float(scores.min())}
    share["by_group"] = {str(group): {"images": int((groups == group).sum()), "refused": int(refused[groups == group].sum()),
                                      "least_unfamiliarity": float(scores[groups == group].min())}
                         for group in sorted(set(groups.tolist()))}
    return share


def unfamiliarity_histogram(scores: dict[str, np.ndarray], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(figsize=(7, 4))
    edges = np.logspace(np.log10(0.2), np.log10(max(5.0, *(s.max() for s in scores.values()))), 60)
    for name, values in scores.items():
        axes.hist(values, bins=edges, alpha=0.6, label=name, density=True)
    axes.axvline(1.0, color="k", linestyle="--", label="refusal limit")
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.set_xticks([0.25, 0.5, 1, 2, 4])
    axes.set_xlabel("unfamiliarity (the larger of the two tests' ratios to their limits)")
    axes.set_ylabel("density")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def fit_and_report(models_dir, splits, out_dir, validation_fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED,
                   components: int = DEFAULT_COMPONENTS, head_ct: str | Path | None = None,
                   cache: str | Path | None = None) -> dict:
    """Fit the refusal check on the training script's training part and the development parts of the probe sets,
    set its limits on its validation split, store it beside the disease detector, and measure refusals on the test
    splits, on generated non-MRI pictures (development: seed 0; held out: seed 1), on real non-brain medical
    images (development and held-out sources of ``probes.NON_BRAIN_PARTS``) and on the collections' own CT slices
    (``splits`` as ``data.load_sources(..., non_mri=True)`` loads them: those of the train split, with crops, flips
    and windows of them, are development material for the second test, those of the test split are held out).

    The CT test learns from every CT there is: the collections' CT and the ``head_ct`` collection (``head_ct``, a
    folder of ``ct_probes.head_ct_slices``), each with painted lesions, windows, crops and compression
    (``ct_probes.ct_variants``). Its report is leave one CT source out (``leave_one_ct_source_out``): the
    collections' CT, ``head_ct``, and painted bleeds on the half of the ``head_ct`` series it did not learn from,
    each in turn unseen, with every MRI source's validation and test scans. ``cache``: a folder where each set's
    features are kept, keyed by the models' weights and the seed, and read back by a later run (to re-fit without
    re-running the models)."""
    from ..cascade import Cascade
    from ..loading import load_stages
    from .ct_probes import ct_variants, head_ct_slices, painted_bleed
    from .data import carve_validation, only_mri, only_non_mri
    from .probes import non_brain_medical_images, non_mri_images, other_brain_mri, picture_variants

    models_dir, out_dir = Path(models_dir), Path(out_dir)
    cascade = Cascade(load_stages(models_dir))
    train, validation = carve_validation(only_mri(splits["train"]), validation_fraction, seed)
    test = only_mri(splits["test"])
    rng = np.random.default_rng(seed)
    ct_development = [(f"{source}/{file}", image) for source, file, image in
                      zip(*(only_non_mri(splits["train"])[column] for column in ("source", "file", "image")))]
    ct_development += [(name, variant) for name, image in list(ct_development)
                       for _, variant in list(picture_variants(image, rng, 8))[1:]]
    ct_held_out = only_non_mri(splits["test"])
    collection_ct = [image for split in ("train", "test") for image in only_non_mri(splits[split])["image"]]
    head_ct_files = head_ct_slices(head_ct) if head_ct else []
    head_ct_images = [Image.open(item.path).convert("L") for item in head_ct_files]
    series = np.array([item.series for item in head_ct_files])
    probes = {"non_mri_development": non_mri_images(seed=0), "non_mri_held_out": non_mri_images(seed=1, scale=2),
              **{f"non_brain_medical_{part}": [(source, image) for source, _, image in non_brain_medical_images(part)]
                 for part in ("development", "held_out")},
              "ct_development": [("collection CT, train split", image) for _, image in ct_development],
              "ct_held_out": [(f"collection CT, test split: {label}", image)
                              for label, image in zip(ct_held_out["label_id"], ct_held_out["image"])]}
    ct_sets = {"collection_ct": collection_ct,
               "collection_ct_variants": [v for image in collection_ct for v in ct_variants(image, rng, CT_VARIANTS)],
               "collection_ct_variants_without_bleeds": [v for image in collection_ct
                                                         for v in ct_variants(image, rng, CT_VARIANTS, bleeds=False)],
               "head_ct": head_ct_images,
               "head_ct_variants": [ct_variants(image, rng, 1)[0] for image in head_ct_images],
               "head_ct_variants_without_bleeds": [ct_variants(image, rng, 1, bleeds=False)[0] for image in head_ct_images],
               "head_ct_bleeds": [painted_bleed(image, rng) for image in head_ct_images]}
    inputs = {"train": train["image"], "validation": validation["image"], "test": test["image"],
              **{name: [image for _, image in pairs] for name, pairs in probes.items()}, **ct_sets,
              "other_brain_mri": [other_brain_mri()]}
    features = {}
    identity = hashlib.sha256(json.dumps(weights_sha256(models_dir), sort_keys=True).encode()).hexdigest()[:16]
    for name, images in inputs.items():
        cached = Path(cache) / f"{identity}-{seed}-{name}.npz" if cache else None
        if cached and cached.is_file():
            stored = np.load(cached)
            features[name] = Features({task: stored[task] for task in TASKS}, stored["pixels"])
            continue
        pixels: list[np.ndarray] = []
        embeddings = cascade.run_models(list(images), 16, pixel_rows=pixels, progress=f"embedding {name}")[1]
        features[name] = Features(embeddings, np.stack(pixels) if pixels else np.zeros((0, PIXEL_FEATURES)))
        if cached:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cached, pixels=features[name].pixels, **features[name].embeddings)
    not_ct = Features.join([features[name] for name in ("non_mri_development", "non_brain_medical_development")])
    development = Features.join([not_ct, features["ct_development"]])
    every_ct = [name for name in ("collection_ct", "collection_ct_variants", "head_ct", "head_ct_variants")
                if len(features[name])]
    check = fit_familiarity(features["train"].embeddings, features["validation"].embeddings, weights_sha256(models_dir),
                            components, other_embeddings=development.embeddings, train_pixels=features["train"].pixels,
                            ct=Features.join([features[name] for name in every_ct]), not_ct=not_ct)
    check.save(models_dir / "disease-detector" / FAMILIARITY_FILE)
    scores = {name: check.unfamiliarity(f.embeddings) for name, f in features.items() if len(f)}
    refused = {name: refuses(scores[name], ct_refused(check, features[name])) for name in scores}
    groups = {"validation": np.asarray(validation["label_id"]), "test": np.asarray(test["label_id"]),
              **{name: np.array([group for group, _ in pairs]) for name, pairs in probes.items()},
              **{name: np.array([name] * len(features[name])) for name in ct_sets if len(features[name])}}
    report = {
        "method": f"the larger of two ratios over the 4 models' unit-length embeddings: the residual outside their top "
                  f"{check.components.shape[0]} principal components (training part) over the largest validation "
                  "residual, and P(not a brain MRI slice) of a logistic regression (training part against the "
                  "development non-MRI pictures, non-brain medical images and the train split's CT slices with "
                  "variants) over its limit, halfway in log-odds between the highest validation score and the lowest "
                  "development-picture score; refused above 1, or when the CT test (a logistic regression of head CT "
                  "against the training part's MRI on the embeddings and pixel features) gives P(head CT) above its "
                  "limit",
        "training_images": len(train), "limit": check.limit, "other_limit": check.other_limit,
        "ct_limit": check.ct_limit, "ct_training_images": sum(len(features[name]) for name in every_ct),
        **{name: _refused_share(refused[name], scores[name], groups[name]) for name in groups},
        "other_brain_mri": {"what": "matplotlib's sample MRI s1045.ima (sagittal head, another scanner)",
                            "unfamiliarity": float(scores["other_brain_mri"][0]),
                            "refused": bool(refused["other_brain_mri"][0])},
    }
    if len(head_ct_files):
        report["ct_leave_one_source_out"] = leave_one_ct_source_out(
            features["train"], mri_by_source(features, {"validation": validation, "test": test}),
            ct_folds(features, series_half(series)), not_ct, check)
    out_dir.mkdir(parents=True, exist_ok=True)
    for folder in (out_dir, models_dir / "disease-detector"):  # the detector's model card quotes it
        (folder / "familiarity.json").write_text(json.dumps(report, indent=2))
    unfamiliarity_histogram({"official test scans": scores["test"], "non-MRI, held out": scores["non_mri_held_out"],
                             "non-brain medical, held out": scores["non_brain_medical_held_out"],
                             "collection CT, held out": scores["ct_held_out"]},
                            out_dir / "unfamiliarity.png")
    return report


CT_VARIANTS = 8  # altered copies of each collection CT slice the CT test learns from


def series_half(series: np.ndarray) -> np.ndarray:
    """True for the ``head_ct`` series in the first half by the hash of their names: a patient's slices stay together."""
    return np.array([int(hashlib.sha256(name.encode()).hexdigest(), 16) % 2 == 0 for name in series], dtype=bool)


def ct_folds(features: dict[str, Features], first_half: np.ndarray) -> dict[str, dict]:
    """The leave-one-CT-source-out folds: what the CT test learns from, and the CT it never saw, in each."""
    f = features
    return {
        "collection CT unseen": {"train": Features.join([f["head_ct"], f["head_ct_variants"]]),
                                 "unseen": {"collection CT": f["collection_ct"]}},
        "head_ct unseen": {"train": Features.join([f["collection_ct"], f["collection_ct_variants"]]),
                           "unseen": {"head_ct": f["head_ct"], "head_ct with painted bleeds": f["head_ct_bleeds"]}},
        "painted bleeds unseen": {
            "train": Features.join([f["collection_ct"], f["collection_ct_variants_without_bleeds"],
                                    f["head_ct"].select(first_half), f["head_ct_variants_without_bleeds"].select(first_half)]),
            "unseen": {"painted bleeds, other head_ct series": f["head_ct_bleeds"].select(~first_half)}},
    }


def mri_by_source(features: dict[str, Features], datasets: dict) -> dict[str, Features]:
    """The validation and test MRI by collection, and the tumor collection's tumors (T1 with contrast, enhancing)
    apart."""
    parts = {}
    for split, dataset in datasets.items():
        sources, labels = np.asarray(dataset["source"]), np.asarray(dataset["label_id"])
        for source in sorted(set(sources.tolist())):
            parts[f"{split}: {source}"] = features[split].select(sources == source)
        tumors = (sources == "brain_tumor") & np.char.startswith(labels.astype(str), "tumor_")
        if tumors.any():
            parts[f"{split}: brain_tumor tumors (enhancing T1)"] = features[split].select(tumors)
    return parts
