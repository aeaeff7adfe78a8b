"""MRI Cascade — the Gradio Space. Wires components to mri_cascade; all logic lives in the library."""

from __future__ import annotations

import os

import gradio as gr

from mri_cascade import Cascade, ImageLoadError, ModelLoadError
from mri_cascade.images import MAX_FILE_BYTES
from mri_cascade.service import (
    DISCLAIMER,
    SLICE_COLUMNS,
    View,
    cache_ttl_seconds,
    classify,
    classify_series,
    example_scans,
    limits_text,
)

MAX_STAGES = 3
CONCURRENCY_ID = "cascade"  # one inference at a time: a single forward pass already uses every core
SERIES_TYPES = [".dcm", ".nii", ".gz", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif"]


HEATMAP_LABEL = "Grad-CAM: where the deciding model looked (bright = strong evidence)"


def result_panel(prefix: str, series: bool) -> list[gr.components.Component]:
    """Answer, path, the heatmap (one per slice for a series), the seven joint bars and one bar chart per
    stage, in that order; the heatmap sits beside the bars."""
    answer = gr.Markdown(label="answer", elem_id=f"{prefix}answer")
    path = gr.Markdown(label="path", elem_id=f"{prefix}path")
    with gr.Row():
        if series:
            heatmap = gr.Gallery(label=HEATMAP_LABEL, columns=3, height=420, elem_id=f"{prefix}heatmaps")
        else:
            heatmap = gr.Image(label=HEATMAP_LABEL, type="pil", format="png", interactive=False, height=420,
                               elem_id=f"{prefix}heatmap")
        with gr.Column():
            joint = gr.Label(num_top_classes=7, label="All seven answers (joint probability)", show_heading=False,
                             elem_id=f"{prefix}joint")
            stages = [gr.Label(label=f"stage {i + 1}", visible=False, show_heading=False,
                               elem_id=f"{prefix}stage-{i + 1}") for i in range(MAX_STAGES)]
    return [answer, path, heatmap, joint, *stages]


def panel_values(view: View, series: bool) -> list:
    """Values for ``result_panel``: a refused input shows its reason only, no bars and no heatmap."""
    if not view.heatmaps:
        heatmap = None
    else:
        heatmap = view.heatmaps if series else view.heatmaps[0][0]
    stage_updates = [gr.update(value=probabilities, label=heading, visible=True) for heading, probabilities in view.stages]
    stage_updates += [gr.update(value=None, visible=False)] * (MAX_STAGES - len(view.stages))
    return [view.answer, view.path, heatmap, view.joint or None, *stage_updates]


def build_demo(cascade: Cascade) -> gr.Blocks:
    def refuse(message: str) -> gr.Error:
        # print_exception=False: the message names the user's file, and server logs must not
        return gr.Error(message, title="Cannot read this input", print_exception=False)

    def guarded(action, *inputs):
        try:
            return action(*inputs)
        except ImageLoadError as error:
            raise refuse(str(error)) from None

    def show(image_path: str | None):
        if not image_path:
            raise refuse("Drop a brain MRI slice (PNG or JPEG) into the box first.")
        return panel_values(guarded(classify, cascade, image_path), series=False)

    def show_series(paths: list[str] | None):
        if not paths:
            raise refuse("Add one or more slices, a DICOM series or a NIfTI volume first.")
        view, rows = guarded(classify_series, cascade, paths)
        return [*panel_values(view, series=True), rows]

    def classify_api(image_path: str | None) -> dict:
        if not image_path:
            raise refuse("No image was sent: pass one file, e.g. handle_file('scan.jpg').")
        return guarded(classify, cascade, image_path, False).payload

    def classify_series_api(paths: list[str] | None) -> dict:
        if not paths:
            raise refuse("No files were sent: pass a list, e.g. [handle_file('a.dcm'), handle_file('b.dcm')].")
        return guarded(classify_series, cascade, paths, False)[0].payload

    ttl = cache_ttl_seconds()
    with gr.Blocks(title="MRI Cascade", delete_cache=(ttl, ttl)) as demo:
        gr.Markdown("# MRI Cascade\nAlzheimer's disease, brain tumor, or neither — from a 2-D brain MRI slice or a series.")
        gr.Markdown(DISCLAIMER)
        gr.Markdown(limits_text(), elem_id="limits")
        with gr.Tab("One slice"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="filepath", format="png", image_mode=None, sources=["upload", "clipboard"],
                                     label="Brain MRI slice (PNG, JPEG, ...)", height=360)
                    button = gr.Button("Classify", variant="primary")
                    examples = example_scans()
                    if examples:
                        gr.Examples(examples, inputs=image, label="Example scans")
                with gr.Column():
                    outputs = result_panel("", series=False)
            gr.on([image.upload, button.click], show, image, outputs, api_name="show", concurrency_id=CONCURRENCY_ID,
                  api_description="What the page shows for one slice: answer, path, joint bars, per-stage bars.")
        with gr.Tab("Patient series, DICOM, NIfTI"):
            with gr.Row():
                with gr.Column():
                    files = gr.File(file_count="multiple", file_types=SERIES_TYPES, type="filepath",
                                    label="Slices of one patient, a DICOM series or a NIfTI volume")
                    series_button = gr.Button("Classify the series", variant="primary")
                with gr.Column():
                    series_outputs = result_panel("series-", series=True)
            table = gr.Dataframe(headers=SLICE_COLUMNS, label="Every slice", interactive=False, elem_id="slices")
            gr.on([files.upload, series_button.click], show_series, files, [*series_outputs, table],
                  api_name="show_series", concurrency_id=CONCURRENCY_ID,
                  api_description="What the page shows for a series: the patient answer and a per-slice table.")
        api_image = gr.File(file_count="single", type="filepath", visible=False)
        api_files = gr.File(file_count="multiple", type="filepath", visible=False)
        api_result = gr.JSON(label="result", visible=False)
        gr.Button(visible=False).click(
            classify_api, api_image, api_result, api_name="classify", concurrency_id=CONCURRENCY_ID,
            api_description="Classify one brain MRI slice (picture or single-frame DICOM): "
            "{label, display_name, probabilities over all seven ids, stages, refused, reason, unfamiliarity}. "
            "Input that does not look like a brain MRI slice gets refused: true, a reason and label null.",
        )
        gr.Button(visible=False).click(
            classify_series_api, api_files, api_result, api_name="classify_series", concurrency_id=CONCURRENCY_ID,
            api_description="Classify a patient's slices (files, a multi-frame DICOM or a NIfTI volume) together: "
            "{label, display_name, probabilities, stages, refused, reason, unfamiliarity, "
            "slices: [{index, label, refused, unfamiliarity, probabilities}]}. Refused slices are left out of the answer.",
        )
    return demo


def main() -> None:
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
    )


if __name__ == "__main__":
    main()
