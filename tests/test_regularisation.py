"""The training script's regularisers: mixup/cutmix targets match the pixels, and the weight average is what the
Trainer evaluates and exports."""


import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from train.regularisation import BatchMixer, MixingTrainer, WeightAverageCallback, ema_with_warmup


def constant_batch(num_images: int = 4, size: tuple[int, int] = (8, 10)) -> torch.Tensor:
    """Image i is filled with the value i, so every mixed pixel tells which images it came from."""
    return torch.arange(num_images, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, *size).clone()


def test_mixup_targets_carry_the_same_share_as_the_pixels():
    mixer = BatchMixer(num_classes=3, mixup_alpha=0.4, seed=1)
    pixels, labels = constant_batch(), torch.tensor([0, 1, 2, 1])
    mixed, targets = mixer(pixels, labels)
    # image 0 is blended with image 3 (the batch reversed): value = 3 * (1 - lam)
    lam = 1 - mixed[0, 0, 0, 0].item() / 3
    assert 0 < lam < 1
    assert torch.allclose(mixed[0], torch.full_like(mixed[0], 3 * (1 - lam)))
    assert torch.allclose(targets[0], torch.tensor([lam, 1 - lam, 0.0]))  # own class 0, partner's class 1
    assert torch.allclose(targets.sum(dim=1), torch.ones(4))


def test_cutmix_targets_match_the_pasted_area():
    mixer = BatchMixer(num_classes=2, cutmix_alpha=1.0, seed=3)
    pixels, labels = constant_batch(2, size=(20, 30)), torch.tensor([0, 1])
    for _ in range(5):
        mixed, targets = mixer(pixels, labels)
        pasted_share = (mixed[0] == 1).float().mean().item()  # image 0 with a box of image 1
        assert targets[0, 1].item() == pytest.approx(pasted_share)
        assert targets[0, 0].item() == pytest.approx(1 - pasted_share)
        assert set(mixed[0].unique().tolist()) <= {0.0, 1.0}  # pasted, never blended


def test_a_mixer_needs_something_to_do():
    with pytest.raises(ValueError, match="mixup_alpha"):
        BatchMixer(num_classes=2)


class RecordingModel(torch.nn.Module):
    """Returns fixed logits and remembers the pixels it was given."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = None

    def forward(self, pixel_values):
        self.seen = pixel_values
        return {"logits": torch.zeros(len(pixel_values), 2) + self.weight}


def test_only_training_batches_are_mixed(tmp_path):
    model = RecordingModel()
    received = []

    def loss(outputs, labels, num_items_in_batch=None):
        received.append(labels)
        return outputs["logits"].sum()

    trainer = MixingTrainer(model=model, args=TrainingArguments(tmp_path, report_to="none", use_cpu=True),
                            mixer=BatchMixer(num_classes=2, mixup_alpha=0.4, seed=0), compute_loss_func=loss)
    inputs = {"pixel_values": constant_batch(2), "labels": torch.tensor([0, 1])}
    model.eval()
    trainer.compute_loss(model, dict(inputs))
    assert torch.equal(model.seen, inputs["pixel_values"]) and received[-1].dtype == torch.long
    model.train()
    trainer.compute_loss(model, dict(inputs))
    assert not torch.equal(model.seen, inputs["pixel_values"]) and received[-1].shape == (2, 2)


def test_the_average_warms_up_then_holds_its_decay():
    averaged, current = torch.zeros(1), torch.ones(1)
    assert ema_with_warmup(0.99)(averaged, current, torch.tensor(1)).item() == pytest.approx(1 - 2 / 11)
    assert ema_with_warmup(0.99)(averaged, current, torch.tensor(10_000)).item() == pytest.approx(0.01)


def test_the_trainer_sees_the_averaged_weights_between_epochs(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    args, state, control = TrainingArguments(tmp_path, report_to="none", use_cpu=True), TrainerState(), TrainerControl()
    callback = WeightAverageCallback(decay=0.5)
    callback.on_train_begin(args, state, control, model=model)
    for _ in range(3):
        with torch.no_grad():
            model[0].weight.add_(1.0)
            model[1].running_mean.add_(1.0)
        callback.on_step_end(args, state, control, model=model)
    raw = {name: tensor.clone() for name, tensor in model.state_dict().items()}

    callback.on_epoch_end(args, state, control, model=model)
    for name, tensor in callback.average.module.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert not torch.equal(model[0].weight, raw["0.weight"])  # the average lags the raw weights
    assert not torch.equal(model[1].running_mean, raw["1.running_mean"])  # BatchNorm statistics averaged too

    callback.on_epoch_begin(args, state, control, model=model)
    for name, tensor in raw.items():
        assert torch.equal(model.state_dict()[name], tensor), name
