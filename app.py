"""MRI Cascade — the Gradio Space. Wires components to mri_cascade; all logic lives in the library."""

from __future__ import annotations

import os

import gradio as gr

from mri_cascade import Cascade, ImageLoadError, ModelLoadError
from mri_cascade.service import DISCLAIMER, classify, example_scans

MAX_STAGES = 3
CONCURRENCY_ID = "cascade"  # one inference at a time: a single forward pass already uses every core


def build_demo(cascade: Cascade) -> gr.Blocks:
    def show(image_path: str | None):
        if not image_path:
            raise gr.Error("Drop a brain MRI slice (PNG or JPEG) into the box first.")
        try:
            view = classify(cascade, image_path)
        except ImageLoadError as error:
            raise gr.Error(str(error)) from None
        stage_updates = [
            gr.update(value=probabilities, label=heading, visible=True) for heading, probabilities in view.stages
        ] + [gr.update(value=None, visible=False)] * (MAX_STAGES - len(view.stages))
        return view.answer, view.path, view.joint, *stage_updates

    def classify_api(image_path: str | None) -> dict:
        if not image_path:
            raise gr.Error("No image was sent: pass one file, e.g. handle_file('scan.jpg').")
        try:
            return classify(cascade, image_path).payload
        except ImageLoadError as error:
            raise gr.Error(str(error)) from None

    with gr.Blocks(title="MRI Cascade") as demo:
        gr.Markdown("# MRI Cascade\nAlzheimer's disease, brain tumor, or neither — from one 2-D brain MRI slice.")
        gr.Markdown(DISCLAIMER)
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    type="filepath", format="png", image_mode=None, sources=["upload", "clipboard"],
                    label="Brain MRI slice", height=360,
                )
                button = gr.Button("Classify", variant="primary")
                examples = example_scans()
                if examples:
                    gr.Examples(examples, inputs=image, label="Example scans")
            with gr.Column():
                answer = gr.Markdown(label="answer", elem_id="answer")
                path = gr.Markdown(label="path", elem_id="path")
                joint = gr.Label(
                    num_top_classes=7, label="All seven answers (joint probability)", show_heading=False, elem_id="joint"
                )
                stages = [
                    gr.Label(label=f"stage {i + 1}", visible=False, show_heading=False, elem_id=f"stage-{i + 1}")
                    for i in range(MAX_STAGES)
                ]
        outputs = [answer, path, joint, *stages]
        gr.on([image.upload, button.click], show, image, outputs, api_name="show", concurrency_id=CONCURRENCY_ID,
              api_description="What the page shows for one slice: answer, path, joint bars, per-stage bars.")
        api_image = gr.File(file_count="single", type="filepath", visible=False)
        api_result = gr.JSON(label="result", visible=False)
        gr.Button(visible=False).click(
            classify_api, api_image, api_result, api_name="classify", concurrency_id=CONCURRENCY_ID,
            api_description="Classify one brain MRI slice: {label, display_name, probabilities (all seven ids), stages}.",
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
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )


if __name__ == "__main__":
    main()
