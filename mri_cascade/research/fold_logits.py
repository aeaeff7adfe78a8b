"""Fold models' logits kept in a small file, so that the out-of-fold figures can grow fold by fold.

A fold model (``train/ship.sh`` with ``FOLD=K``) takes the better part of an hour to train and matters only for
its logits on the scans it held out: its fold of the training split (``calibrate``, ``benchmark``) and the test
split (``evaluate``'s unseen subjects). ``fitting.keep_fold_logits`` keeps those logits, keyed by each scan's
collection and file, beside each model's training record, weights' SHA-256 and test-time flips; ``--fold-models``
takes such a file in place of the folder. A kept file stands for models of the shipped recipe only while the
shipped models are of that recipe (their training records, the held-out fold aside) and run with the same
test-time flips: ``check_against`` refuses it otherwise, as the logits would then describe other models. A shipped
model trained on every scan (``--validation none``) is the refit of its fold models' recipe: with no fold to choose
an epoch on, it keeps its last, so their records also differ in how they validated and chose one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FOLD_LOGITS_SUFFIX = ".npz"
RECORD_FIELDS_FREE_BY_FOLD = ("validation_fold",)  # the training-record fields that differ between folds' models
RECORD_FIELDS_FREE_IN_A_REFIT = ("validation", "best_metric")  # and between them and a refit on every scan
RECORD_DEFAULTS = {"trainable_blocks": -1}
"""Options that ``run_train.py`` gained after some models were recorded, with the value that a record without
them trained with (the option's default there; a test holds the two equal)."""


def scan_keys(scans) -> np.ndarray:
    """Each scan's key: its collection and its file within it (``alzheimer/train/MildDemented/x.jpg``)."""
    return np.char.add(np.char.add(np.asarray(scans["source"], dtype=str), "/"), np.asarray(scans["file"], dtype=str))


def recipe_of(record: Mapping, refit: bool = False) -> dict:
    """A training record without the fields that differ by fold (and, compared with a ``refit`` on every scan,
    without how it validated), older records completed with ``RECORD_DEFAULTS``."""
    free = RECORD_FIELDS_FREE_BY_FOLD + (RECORD_FIELDS_FREE_IN_A_REFIT if refit else ())
    return {key: value for key, value in {**RECORD_DEFAULTS, **record}.items() if key not in free}


def is_refit(record: Mapping) -> bool:
    """Whether a training record is of a model trained on every scan of its split (``--validation none``)."""
    return record.get("validation") == "none"


def is_fold_logits_file(path: str | Path) -> bool:
    return Path(path).suffix == FOLD_LOGITS_SUFFIX and Path(path).is_file()


@dataclass(eq=False)  # compared (and hashed) as the one object loaded from one file
class FoldLogits:
    """One fold's models' logits (columns in each task's class order) on every scan they might answer."""

    fold: int
    records: dict[str, dict]  # task -> the model's training record
    weights_sha256: dict[str, str]  # task -> its weights' SHA-256, ``runtime.weights_sha256`` (where the logits came from)
    test_time_flips: dict[str, bool]  # task -> whether its logits average each image and its mirror image
    keys: np.ndarray  # scan_keys
    logits: dict[str, np.ndarray]  # task -> (scans, classes)

    @property
    def tasks(self) -> list[str]:
        return list(self.logits)

    def save(self, path: str | Path) -> None:
        metadata = {"fold": self.fold, "records": self.records, "weights_sha256": self.weights_sha256,
                    "test_time_flips": self.test_time_flips}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, metadata=np.array(json.dumps(metadata)), keys=self.keys,
                            **{f"logits/{task}": values.astype(np.float32) for task, values in self.logits.items()})

    @classmethod
    def load(cls, path: str | Path) -> FoldLogits:
        try:
            with np.load(path, allow_pickle=False) as stored:
                metadata = json.loads(str(stored["metadata"]))
                logits = {name.removeprefix("logits/"): stored[name].astype(np.float64)
                          for name in stored.files if name.startswith("logits/")}
                keys = stored["keys"]
            return cls(int(metadata["fold"]), metadata["records"], metadata["weights_sha256"],
                       metadata["test_time_flips"], keys, logits)
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{path} is not a file of kept fold logits (mri-cascade keep-fold-logits): {error}") from None

    def check_against(self, shipped_records: Mapping[str, Mapping | None], shipped_flips: Mapping[str, bool],
                      path: str | Path) -> None:
        """An error unless every kept task's model is of the shipped model's recipe and ran with its flips."""
        for task in self.tasks:
            shipped = shipped_records.get(task)
            refit = shipped is not None and is_refit(shipped)
            if shipped is None or recipe_of(shipped, refit) != recipe_of(self.records[task], refit):
                raise ValueError(f"{path}: its {task} logits come from a model of another recipe than the shipped "
                                 f"{task} model (training records differ beyond the held-out fold); train fold "
                                 f"{self.fold} again with the shipped recipe and keep its logits anew")
            if bool(shipped_flips[task]) != bool(self.test_time_flips[task]):
                raise ValueError(f"{path}: its {task} logits were taken with test-time flips "
                                 f"{'on' if self.test_time_flips[task] else 'off'}, the shipped model has them "
                                 f"{'on' if shipped_flips[task] else 'off'}; keep the fold's logits anew")

    def lookup(self, scans) -> dict[str, np.ndarray]:
        """The kept logits of ``scans`` (a dataset with ``source`` and ``file``), in their order."""
        row_of = {key: row for row, key in enumerate(self.keys)}
        wanted = scan_keys(scans)
        missing = [key for key in wanted if key not in row_of]
        if missing:
            raise ValueError(f"the kept logits of fold {self.fold} lack {len(missing)} of the scans asked for (first: "
                             f"{missing[0]}): the collections changed since they were kept; keep them anew")
        rows = np.array([row_of[key] for key in wanted], dtype=np.int64)
        return {task: values[rows] for task, values in self.logits.items()}
