"""The Space's heatmaps (issue 38): the answer never waits for them, their caption carries the explanation
benchmark's figure read at run time, and the series gallery shows whole slices."""

import json

import pytest
from conftest import synthetic_slice

from mri_cascade import service
from mri_cascade.results import CascadeResult

FIGURE = {"value": 0.6431, "low": 0.5517, "high": 0.7208, "clusters": 80, "images": 126}


def write_report(path, pointing: dict) -> None:
    """The part of ``reports/explanation_benchmark_reporting.json`` the caption reads (``mri-cascade
    explain-benchmark``), with the shape it writes."""
    figures = {"pointing": pointing, "mass_in_box": {"value": 0.3, "low": 0.2, "high": 0.4, "images": 126}}
    report = {"part": "reporting", "slices": 140, "answered_tumor": 126,
              "methods": {"grad-cam, deciding model": {"by_source": {"all": {**figures, "pointing": FIGURE | {"value": 0.2}}}},
                          "occlusion, answer": {"by_source": {"br35h": figures, "all": figures}}}}
    path.write_text(json.dumps(report))


@pytest.fixture
def report(tmp_path, monkeypatch):
    path = tmp_path / "explanation_benchmark_reporting.json"
    write_report(path, FIGURE)
    monkeypatch.setattr(service, "EXPLANATION_REPORT", path)
    return path


def answer(label: str) -> CascadeResult:
    return CascadeResult(label=label, display_name=label, probabilities={}, stages=[])


def test_the_caption_says_what_the_map_is_and_how_often_it_pointed_at_the_tumor(report):
    caption = service.heatmap_caption(answer("tumor_glioma"))
    assert caption == ("Occlusion map: bright where painting over the slice (with the head's median grey) lowers the "
                       "answer's probability most. On 126 held-out tumor slices with known boxes its hottest point "
                       "lay on the tumor 64 % of the time (95 % CI 55-72 %).")
    write_report(report, FIGURE | {"value": 0.5, "low": None, "high": None, "images": 40})  # read afresh, every time
    assert service.heatmap_caption(answer("tumor_pituitary")).endswith(
        "On 40 held-out tumor slices with known boxes its hottest point lay on the tumor 50 % of the time.")


def test_without_the_report_the_caption_says_what_the_map_is_and_no_figure(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(service, "EXPLANATION_REPORT", tmp_path / "missing.json")
    assert service.heatmap_caption(answer("tumor_meningioma")) == service.HEATMAP_WHAT
    assert "%" not in service.HEATMAP_WHAT and service.heatmap_pointing() is None
    (tmp_path / "broken.json").write_text("{not json")
    monkeypatch.setattr(service, "EXPLANATION_REPORT", tmp_path / "broken.json")
    assert service.heatmap_caption(answer("tumor_glioma")) == service.HEATMAP_WHAT
    assert "explanation report cannot be read" in caplog.text


def test_alzheimer_and_healthy_captions_claim_no_figure(report):
    alzheimer = service.heatmap_caption(answer("alzheimer_mild"))
    assert alzheimer.startswith(service.HEATMAP_WHAT)
    assert "no boxes to check it against" in alzheimer and "not a lesion" in alzheimer and "%" not in alzheimer
    healthy = service.heatmap_caption(answer("healthy"))
    assert healthy.startswith(service.HEATMAP_WHAT) and "%" not in healthy


@pytest.fixture
def counted(tiny_cascade, monkeypatch):
    """Every call of the cascade's ``explain_batch`` (which still runs)."""
    calls = []
    explain_batch = tiny_cascade.explain_batch

    def counting(images, result, *args, **kwargs):
        calls.append(len(images))
        return explain_batch(images, result, *args, **kwargs)

    monkeypatch.setattr(tiny_cascade, "explain_batch", counting)
    return calls


def handlers(cascade) -> dict:
    import app

    return {fn.name: fn.fn for fn in app.build_demo(cascade).fns.values()}


def test_the_answer_returns_without_computing_the_heatmap_which_follows(tiny_cascade, counted, tmp_path):
    """Catches the page's answer waiting for the heatmap (1-2 s a slice with occlusion)."""
    scan = tmp_path / "scan.png"
    synthetic_slice(11, lesion=True).save(scan)
    events = handlers(tiny_cascade)
    *panel, view = events["show"](str(scan), "balanced")  # a fresh page: no answer shown before
    assert counted == [] and panel[0].startswith("## ")
    assert panel[2]["value"] is None and panel[3]["value"] == service.HEATMAP_PENDING
    overlay, caption = events["draw"](view, progress=None)
    assert counted == [1] and overlay.size == synthetic_slice(11).size
    assert caption == service.heatmap_caption(view.result) and view.images == []  # the slice is let go once drawn
    assert events["draw"](view, progress=None) == [{"__type__": "update"}] * 2 and counted == [1]  # drawn once

    paths = []
    for seed in range(3):
        paths.append(str(tmp_path / f"{seed}.png"))
        synthetic_slice(seed, lesion=True).save(paths[-1])
    *panel, rows, series = events["show_series"](paths, "balanced", view, progress=lambda *told: None)
    assert counted == [1] and len(rows) == 3 and panel[2]["value"] is None and view.replaced
    gallery, caption = events["draw_series"](series, progress=None)
    assert counted == [1, 3] and [name for _, name in gallery] == ["slice 1", "slice 2", "slice 3"]


def test_heatmaps_of_an_answer_the_page_replaced_stop_at_the_next_batch(tiny_cascade, counted, monkeypatch):
    monkeypatch.setattr(service, "HEATMAP_BATCH", 2)
    view, _ = service.classify_series(tiny_cascade, [synthetic_slice(seed) for seed in range(5)], explain=False)
    newer, _ = service.classify_series(tiny_cascade, [synthetic_slice(7)], explain=False)

    def replaced_meanwhile(fraction, what):
        if what.startswith("heatmaps: slice 3"):
            service.replace(view, newer)

    assert service.heatmaps_for(tiny_cascade, view, replaced_meanwhile) is None
    assert counted == [2] and view.heatmaps == [] and view.images == []
    assert service.heatmaps_for(tiny_cascade, newer) is newer and len(newer.heatmaps) == 1


def test_the_heatmaps_follow_a_successful_answer_in_their_own_queue(tiny_cascade):
    import app

    demo = app.build_demo(tiny_cascade)
    fns = list(demo.fns.values())
    for answer_name, draw_name in [("show", "draw"), ("reshow", "draw"), ("show_series", "draw_series"),
                                   ("reshow_series", "draw_series")]:
        (fn,) = [fn for fn in fns if fn.name == answer_name]
        (follower,) = [f for f in fns if f.trigger_after == fn._id]
        assert follower.name == draw_name and follower.trigger_only_on_success
        assert fn.concurrency_id == app.CONCURRENCY_ID != follower.concurrency_id == app.HEATMAP_CONCURRENCY_ID


def test_the_series_gallery_shows_whole_slices_with_labels_that_fit(app_url):
    import urllib.request

    with urllib.request.urlopen(f"{app_url}/config") as response:
        components = json.loads(response.read())["components"]
    by_id = {c["props"].get("elem_id"): c for c in components if c.get("props", {}).get("elem_id")}
    gallery = by_id["series-heatmaps"]["props"]
    assert gallery["object_fit"] == "contain" and gallery["columns"] == 2
    assert len(gallery["label"]) <= 30 and len(by_id["heatmap"]["props"]["label"]) <= 30  # one line beside the bars
    assert by_id["heatmap-caption"]["type"] == by_id["series-heatmap-caption"]["type"] == "markdown"
