"""The mri-cascade command on a mixed folder: pictures, DICOM, NIfTI and a broken file."""

import csv

import numpy as np
from conftest import dicom_bytes, jpeg_bytes, nifti_bytes, synthetic_slice

from mri_cascade.cli import main
from mri_cascade.labels import LABEL_IDS


def mixed_folder(root):
    (root / "patient-a").mkdir(parents=True)
    (root / "patient-b").mkdir()
    (root / "patient-a" / "1.jpg").write_bytes(jpeg_bytes(synthetic_slice(1)))
    synthetic_slice(2).save(root / "patient-a" / "2.png")
    (root / "patient-a" / "broken.jpg").write_bytes(b"not an image")
    (root / "patient-b" / "scan.dcm").write_bytes(dicom_bytes(np.asarray(synthetic_slice(3), dtype=np.uint16) * 16))
    volume = np.stack([np.asarray(synthetic_slice(k, size=(48, 56)), dtype=float) for k in range(3)], axis=2)
    (root / "patient-b" / "volume.nii.gz").write_bytes(nifti_bytes(volume, gzipped=True))
    return root


def read(path):
    with open(path) as stream:
        return list(csv.DictReader(stream))


def test_predict_writes_one_row_per_file_and_keeps_going(tiny_models, tmp_path, capsys):
    folder = mixed_folder(tmp_path / "scans")
    out = tmp_path / "results.csv"
    assert main(["predict", str(folder), "--out", str(out), "--models", str(tiny_models)]) == 0
    rows = read(out)
    assert len(rows) == 5
    assert list(rows[0]) == ["path", "label", *LABEL_IDS, "slices", "refused", "reason", "unfamiliarity",
                             "operating_point"]
    assert {row["operating_point"] for row in rows} == {"balanced"}
    broken = next(r for r in rows if r["path"].endswith("broken.jpg"))
    assert broken["refused"] == "True" and "not a readable image" in broken["reason"] and not broken["label"]
    volume = next(r for r in rows if r["path"].endswith("volume.nii.gz"))
    assert volume["slices"] == "3" and volume["label"] in LABEL_IDS
    for row in rows:
        if row["refused"] == "False":
            assert abs(sum(float(row[label]) for label in LABEL_IDS) - 1) < 1e-4
    printed = capsys.readouterr()
    assert "4 of 5 files answered" in printed.out
    # the reason reaches the terminal, not only the CSV
    assert f"not answered: {folder / 'patient-a' / 'broken.jpg'}: 'broken.jpg' is not a readable image" in printed.err


def test_series_by_folder_gives_one_answer_per_patient(tiny_models, tmp_path):
    folder = mixed_folder(tmp_path / "scans")
    out = tmp_path / "patients.csv"
    assert main(["predict", str(folder), "--out", str(out), "--models", str(tiny_models), "--series-by", "folder"]) == 0
    rows = read(out)
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == ["patient-a", "patient-b"]
    assert rows[0]["slices"] == "2" and "not a readable image" in rows[0]["reason"]
    assert rows[1]["slices"] == "4"


def test_exit_code_is_non_zero_only_when_nothing_got_an_answer(tiny_models, tmp_path):
    (tmp_path / "junk.png").write_bytes(b"junk")
    assert main(["predict", str(tmp_path / "junk.png"), "--out", str(tmp_path / "r.csv"),
                 "--models", str(tiny_models)]) == 1
    assert read(tmp_path / "r.csv")[0]["refused"] == "True"


def test_predict_refuses_what_is_not_a_brain_mri(guarded_models, tmp_path):
    from mri_cascade.research.probes import non_mri_images

    synthetic_slice(3002).save(tmp_path / "scan.png")
    next(image for kind, image in non_mri_images() if kind == "document").save(tmp_path / "letter.png")
    out = tmp_path / "results.csv"
    assert main(["predict", str(tmp_path / "scan.png"), str(tmp_path / "letter.png"), "--out", str(out),
                 "--models", str(guarded_models)]) == 0
    scan, letter = read(out)
    assert scan["refused"] == "False" and scan["label"] in LABEL_IDS and float(scan["unfamiliarity"]) <= 1
    assert letter["refused"] == "True" and not letter["label"] and "does not look like" in letter["reason"]
    assert float(letter["unfamiliarity"]) > 1 and not letter["healthy"]
    assert main(["predict", str(tmp_path / "letter.png"), "--out", str(out), "--models", str(guarded_models)]) == 1


def test_models_that_cannot_load_get_a_one_line_error(tmp_path, capsys):
    scan = tmp_path / "scan.png"
    synthetic_slice(0).save(scan)
    assert main(["predict", str(scan), "--models", str(tmp_path / "no-such-models")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("mri-cascade: could not load the disease-detector model") and "Traceback" not in error


def test_help_leads_with_classifying_and_every_command_and_flag_is_explained(capsys):
    """Catches a --help that opened with the research commands and flags (--batch-size, --models, ...) with no help."""
    import argparse

    from mri_cascade.cli import build_parser

    parser = build_parser()
    assert parser.description.startswith("Classify brain MRI")
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    assert list(commands.choices)[0] == "predict"
    helped = {choice.dest: choice.help for choice in commands._choices_actions}
    for name, command in commands.choices.items():
        assert helped.get(name), f"{name} has no help"
        for action in command._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"mri-cascade {name} {action.option_strings or action.dest} has no help"


def test_results_csv_is_git_ignored():
    """Catches `mri-cascade predict`'s default output landing in commits."""
    import subprocess

    from conftest import REPO_ROOT

    assert subprocess.run(["git", "check-ignore", "-q", "results.csv"], cwd=REPO_ROOT).returncode == 0
