"""MRI Cascade — the Gradio Space. Wires components to mri_cascade; all logic lives in the library."""

from __future__ import annotations

import os
import sys
from functools import partial

import gradio as gr

from mri_cascade import Cascade, ImageLoadError, ModelLoadError
from mri_cascade.decisions import DEFAULT_OPERATING_POINT, check_operating_point
from mri_cascade.images import MAX_FILE_BYTES
from mri_cascade.loading import DEFAULT_MODELS, MODELS_ENV
from mri_cascade.service import (
    DISCLAIMER,
    HEATMAP_EXPIRED,
    HEATMAP_PENDING,
    HEATMAP_WAIT_SECONDS,
    OPERATING_POINT_HELP,
    OPERATING_POINT_NAMES,
    SLICE_COLUMNS,
    WHAT_TO_UPLOAD,
    View,
    cache_ttl_seconds,
    classify,
    classify_series,
    example_scans,
    heatmaps_for,
    limits_text,
    replace,
)

MAX_STAGES = 3
CONCURRENCY_ID = "cascade"  # one inference at a time: a single forward pass already uses every core
HEATMAP_CONCURRENCY_ID = "heatmaps"  # heatmaps queue apart: an answer never waits behind anyone's heatmaps
SERIES_TYPES = [".dcm", ".nii", ".gz", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif"]
HEATMAP_LABEL = "Occlusion map"
SERIES_HEATMAP_LABEL = "Occlusion map of each slice"
PANEL_SIZE = 8  # components of ``result_panel``


def result_panel(prefix: str, series: bool) -> list[gr.components.Component]:
    """Answer, path, the heatmap (one per slice for a series) and its caption, the seven joint bars and one bar
    chart per stage, in that order; the heatmap sits beside the bars and shows once there is an answer."""
    answer = gr.Markdown(label="answer", elem_id=f"{prefix}answer")
    path = gr.Markdown(label="path", elem_id=f"{prefix}path")
    with gr.Row():
        with gr.Column(min_width=160):  # beside the bars, as the bare heatmap was (a column wraps below 320 px)
            if series:  # whole slices (contain, not cropped), two a row: thumbnails and their captions fit
                heatmap = gr.Gallery(label=SERIES_HEATMAP_LABEL, columns=2, height=420, object_fit="contain",
                                     visible=False, elem_id=f"{prefix}heatmaps")
            else:
                heatmap = gr.Image(label=HEATMAP_LABEL, type="pil", format="png", interactive=False, height=420,
                                   visible=False, elem_id=f"{prefix}heatmap")
            caption = gr.Markdown(visible=False, elem_id=f"{prefix}heatmap-caption")
        with gr.Column(min_width=160):
            joint = gr.Label(num_top_classes=7, label="All seven answers (joint probability)", show_heading=False,
                             elem_id=f"{prefix}joint")
            stages = [gr.Label(label=f"stage {i + 1}", visible=False, show_heading=False,
                               elem_id=f"{prefix}stage-{i + 1}") for i in range(MAX_STAGES)]
    return [answer, path, heatmap, caption, joint, *stages]


def heatmap_value(view: View, series: bool):
    if not view.heatmaps:
        return None
    return view.heatmaps if series else view.heatmaps[0][0]


def panel_values(view: View, series: bool) -> list:
    """Values for ``result_panel``: a refused input shows its reason only; the heatmap and bars are hidden. The
    heatmap is empty until drawn (``heatmap_values``), unless ``view`` has it already."""
    stage_updates = [gr.update(value=probabilities, label=heading, visible=True) for heading, probabilities in view.stages]
    stage_updates += [gr.update(value=None, visible=False)] * (MAX_STAGES - len(view.stages))
    shown = not view.refused
    return [view.answer, gr.update(value=view.path, visible=shown),
            gr.update(value=heatmap_value(view, series), visible=shown),
            gr.update(value=view.heatmap_caption or (HEATMAP_PENDING if shown else ""), visible=shown),
            gr.update(value=view.joint or None, visible=shown), *stage_updates]


def heatmap_values(cascade: Cascade, view: View | None, series: bool, progress=None) -> list:
    """The heatmap and caption for ``view``, the answer the page shows (``heatmaps_for``); nothing changes when there
    is nothing to draw, and the caption says so when the answer's slices have expired."""
    if view is None:  # the answer's slices outlived HEATMAP_WAIT_SECONDS in the queue (hidden on a fresh page)
        return [gr.skip(), HEATMAP_EXPIRED]
    if heatmaps_for(cascade, view, progress) is None:
        return [gr.skip(), gr.skip()]
    return [heatmap_value(view, series), view.heatmap_caption]


def file_path(file: gr.FileData | dict | str) -> str:
    """The server path of a file an API caller sent (``handle_file``)."""
    if isinstance(file, str):
        return file
    return file["path"] if isinstance(file, dict) else file.path


def build_demo(cascade: Cascade) -> gr.Blocks:
    def refuse(message: str) -> gr.Error:
        # print_exception=False: the message names the user's file, and server logs must not
        return gr.Error(message, title="Cannot read this input", print_exception=False)

    def guarded(action, *inputs, operating_point: str | None = None):
        try:
            point = check_operating_point(operating_point or DEFAULT_OPERATING_POINT)
        except ValueError as error:
            raise gr.Error(str(error), title="Unknown operating point", print_exception=False) from None
        try:
            return action(*inputs, operating_point=point)
        except ImageLoadError as error:
            raise refuse(str(error)) from None

    def show(image_path: str | None, operating_point: str | None, shown: View | None = None):
        """The answer at once, without its heatmap (``draw`` follows); the view goes to the page's state."""
        if not image_path:
            raise refuse("Drop a brain MRI slice (PNG or JPEG) into the box first.")
        view = guarded(classify, cascade, image_path, False, operating_point=operating_point)
        return [*panel_values(view, series=False), replace(shown, view)]

    def reshow(image_path: str | None, operating_point: str | None, shown: View | None = None):
        """A new operating point re-answers the slice on the page, if there is one."""
        if not image_path:
            return [gr.skip()] * (PANEL_SIZE + 1)
        return show(image_path, operating_point, shown)

    def draw(view: View | None, progress=gr.Progress()):  # noqa: B008
        return heatmap_values(cascade, view, series=False, progress=progress)

    def show_series(paths: list[str] | None, operating_point: str | None, shown: View | None = None,
                    progress=gr.Progress()):  # noqa: B008
        """The patient answer and slice table at once, without the heatmaps (``draw_series`` follows)."""
        if not paths:
            raise refuse("Add one or more slices, a DICOM series or a NIfTI volume first.")
        view, rows = guarded(partial(classify_series, explain=False, progress=progress), cascade, paths,
                             operating_point=operating_point)
        return [*panel_values(view, series=True), rows, replace(shown, view)]

    def reshow_series(paths: list[str] | None, operating_point: str | None, shown: View | None = None,
                      progress=gr.Progress()):  # noqa: B008
        """A new operating point re-answers the series on the page, if there is one."""
        if not paths:
            return [gr.skip()] * (PANEL_SIZE + 2)
        return show_series(paths, operating_point, shown, progress)

    def draw_series(view: View | None, progress=gr.Progress()):  # noqa: B008
        return heatmap_values(cascade, view, series=True, progress=progress)

    def classify_api(image: gr.FileData | None, operating_point: str = DEFAULT_OPERATING_POINT) -> dict:
        """Classify one brain MRI slice (picture or single-frame DICOM), optionally at an operating point
        ('balanced', the default, or 'screening'): {label, display_name, probabilities over all seven ids, stages,
        refused, reason, unfamiliarity, operating_point}. Input that does not look like a brain MRI slice gets
        refused: true, a reason and label null."""
        if not image:
            raise refuse("No image was sent: pass one file, e.g. handle_file('scan.jpg').")
        return guarded(classify, cascade, file_path(image), False, operating_point=operating_point).payload

    def classify_series_api(files: list[gr.FileData] | None, operating_point: str = DEFAULT_OPERATING_POINT) -> dict:
        """Classify a patient's slices (files, a multi-frame DICOM or a NIfTI volume) together, optionally at an
        operating point: {label, display_name, probabilities, stages, refused, reason, unfamiliarity,
        operating_point, slices: [{index, label, refused, unfamiliarity, probabilities}]}. Refused slices are left
        out of the answer."""
        if not files:
            raise refuse("No files were sent: pass a list, e.g. [handle_file('a.dcm'), handle_file('b.dcm')].")
        return guarded(classify_series, cascade, [file_path(f) for f in files], False,
                       operating_point=operating_point)[0].payload

    ttl = cache_ttl_seconds()
    with gr.Blocks(title="MRI Cascade", delete_cache=(ttl, ttl)) as demo:
        gr.Markdown("# MRI Cascade\nAlzheimer's disease, brain tumor, or neither — from a 2-D brain MRI slice or a series.")
        gr.Markdown(DISCLAIMER)
        gr.Markdown(WHAT_TO_UPLOAD, elem_id="what-to-upload")
        gr.Markdown(limits_text(), elem_id="limits")
        point = gr.Radio([(name, key) for key, name in OPERATING_POINT_NAMES.items()], value=DEFAULT_OPERATING_POINT,
                         label="Operating point", elem_id="operating-point")
        gr.Markdown(OPERATING_POINT_HELP, elem_id="operating-point-help")  # body text: a Radio's info is faint
        with gr.Tab("One slice"):
            with gr.Row():
                with gr.Column():
                    # a file box, not gr.Image: that one decodes the upload with PIL before our loader sees it, so a
                    # file PIL cannot read (text renamed .jpg, DICOM) failed inside Gradio, with no message for the
                    # user and the upload's path in the server log
                    image = gr.File(file_count="single", file_types=SERIES_TYPES, type="filepath",
                                    label="Brain MRI slice (PNG, JPEG, DICOM, ...)", elem_id="slice")
                    button = gr.Button("Classify", variant="primary")
                    examples = example_scans()
                    if examples:
                        gr.Examples([[path] for path, _ in examples], inputs=image, elem_id="examples",
                                    example_labels=[caption for _, caption in examples],
                                    label="Example scans from the official test splits: click one")
                with gr.Column():
                    outputs = result_panel("", series=False)
            shown = gr.State(time_to_live=HEATMAP_WAIT_SECONDS)  # the answer on the page, until its heatmap is drawn
            heatmap_outputs = outputs[2:4]
            # the answer first; its heatmap follows, once it is shown
            button.click(show, [image, point, shown], [*outputs, shown], api_name="show", concurrency_id=CONCURRENCY_ID,
                         api_description="What the page shows for one slice at once: answer, path, joint bars, "
                                         "per-stage bars (the heatmap is empty: /show_heatmap draws it)."
                         ).success(draw, shown, heatmap_outputs, api_name="show_heatmap",
                                   concurrency_id=HEATMAP_CONCURRENCY_ID,
                                   api_description="The heatmap of the answer /show gave last in this session, and "
                                                   "its caption.")
            # an upload, a clicked example or another operating point answers at once
            gr.on([image.change, point.change], reshow, [image, point, shown], [*outputs, shown],
                  api_visibility="private", concurrency_id=CONCURRENCY_ID, trigger_mode="always_last",
                  ).success(draw, shown, heatmap_outputs, api_visibility="private",
                            concurrency_id=HEATMAP_CONCURRENCY_ID)
        with gr.Tab("Patient series, DICOM, NIfTI"):
            with gr.Row():
                with gr.Column():
                    files = gr.File(file_count="multiple", file_types=SERIES_TYPES, type="filepath",
                                    label="Slices of one patient, a DICOM series or a NIfTI volume")
                    series_button = gr.Button("Classify the series", variant="primary")
                with gr.Column():
                    series_outputs = result_panel("series-", series=True)
            table = gr.Dataframe(headers=SLICE_COLUMNS, label="Every slice", interactive=False, elem_id="slices")
            series_shown = gr.State(time_to_live=HEATMAP_WAIT_SECONDS)
            series_heatmap_outputs = series_outputs[2:4]
            point.change(reshow_series, [files, point, series_shown], [*series_outputs, table, series_shown],
                         api_visibility="private", concurrency_id=CONCURRENCY_ID, trigger_mode="always_last",
                         ).success(draw_series, series_shown, series_heatmap_outputs, api_visibility="private",
                                   concurrency_id=HEATMAP_CONCURRENCY_ID)
            gr.on([files.upload, series_button.click], show_series, [files, point, series_shown],
                  [*series_outputs, table, series_shown], api_name="show_series", concurrency_id=CONCURRENCY_ID,
                  api_description="What the page shows for a series at once: the patient answer and a per-slice "
                                  "table (/show_series_heatmaps draws the heatmaps)."
                  ).success(draw_series, series_shown, series_heatmap_outputs, api_name="show_series_heatmaps",
                            concurrency_id=HEATMAP_CONCURRENCY_ID,
                            api_description="The heatmap of every answered slice of the series /show_series answered "
                                            "last in this session, and their caption.")
        gr.api(classify_api, api_name="classify", concurrency_id=CONCURRENCY_ID)
        gr.api(classify_series_api, api_name="classify_series", concurrency_id=CONCURRENCY_ID)
    return demo


def main() -> None:
    print(f"MRI Cascade: loading 4 models from {os.environ.get(MODELS_ENV) or DEFAULT_MODELS} ...",
          file=sys.stderr, flush=True)
    try:
        cascade = Cascade.from_pretrained()
    except ModelLoadError as error:
        raise SystemExit(f"MRI Cascade cannot start: {error}") from None
    demo = build_demo(cascade)
    demo.queue(default_concurrency_limit=1, max_size=64)
    demo.launch(
        max_file_size=MAX_FILE_BYTES,
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        prevent_thread_lock=True,
    )
    print(f"MRI Cascade: ready on {demo.local_url}", file=sys.stderr, flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
