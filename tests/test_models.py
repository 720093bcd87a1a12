"""Tests for the model and loss registries (torchx.models, torchx.losses) and their built-ins.

The registry-driven tests run every registered model and loss, so a newly registered entry is
exercised automatically; one that cannot handle an MNIST-shaped batch makes them fail.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchx.losses as losses
import torchx.models as models
from torchx.errors import ConfigError

# Arguments that make a model take a 1-channel 28x28 batch and return 10 class scores.
# Models not listed here are built with their defaults (and must then cope on their own).
MODEL_ARGS: dict[str, dict] = {
    "cnn": {"in_channels": 1, "num_classes": 10, "image_size": 28},
    "tiny_cnn": {"in_channels": 1, "num_classes": 10},
    "mlp": {"in_dim": 784, "hidden": [32], "out_dim": 10},
    "resnet18": {"in_channels": 1, "num_classes": 10},
    "dcgan_generator": {"latent_dim": 16, "width": 8},
    "dcgan_discriminator": {"width": 8},
    "edsr": {"in_channels": 1, "n_resblocks": 2, "n_feats": 8},
}
# (input shape, output shape) for models that are not 28x28-image classifiers
MODEL_IO: dict[str, tuple[tuple, tuple]] = {
    "dcgan_generator": ((2, 16), (2, 1, 28, 28)),
    "dcgan_discriminator": ((2, 1, 28, 28), (2,)),
    "edsr": ((2, 1, 28, 28), (2, 1, 56, 56)),  # x2 super-resolution
}


def _build(name: str, **overrides) -> nn.Module:
    return models.make({"name": name, "args": {**MODEL_ARGS.get(name, {}), **overrides}})


def _mnist_batch(n: int = 2, side: int = 28) -> torch.Tensor:
    return torch.randn(n, 1, side, side, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- every registered model


def test_model_args_only_name_registered_models():
    stale = (set(MODEL_ARGS) | set(MODEL_IO)) - set(models.registry.keys())
    assert not stale, f"MODEL_ARGS names models that are not registered: {sorted(stale)}"


@pytest.mark.parametrize("name", models.registry.keys())
def test_registered_model_forward_and_backward_on_mnist_batch(name):
    torch.manual_seed(0)
    model = _build(name)
    assert isinstance(model, nn.Module)
    in_shape, out_shape = MODEL_IO.get(name, ((2, 1, 28, 28), (2, 10)))
    out = model(torch.randn(*in_shape, generator=torch.Generator().manual_seed(0)))
    assert out.shape == out_shape, (
        f"model '{name}' returned shape {tuple(out.shape)} for a {list(in_shape)} input; "
        f"add suitable arguments to MODEL_ARGS / MODEL_IO in {__file__}")
    assert torch.isfinite(out).all()

    out.float().sum().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable, f"model '{name}' has no trainable parameters"
    no_grad = [n for n, p in trainable if p.grad is None]
    assert not no_grad, f"no gradient reached {no_grad}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    assert any(p.grad.abs().sum() > 0 for _, p in trainable)


# ---------------------------------------------------------------- cnn


def test_cnn_returns_log_probabilities():
    model = _build("cnn").eval()
    with torch.no_grad():
        out = model(_mnist_batch(4))
    assert (out <= 0).all()
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(4))


@pytest.mark.parametrize("side", [8, 6])
def test_cnn_with_small_image_size_runs_on_that_size(side):
    model = _build("cnn", image_size=side)
    out = model(_mnist_batch(3, side=side))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()


def test_cnn_in_channels_and_num_classes():
    model = models.make({"name": "cnn", "args": {"in_channels": 3, "num_classes": 7}})
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 7)


@pytest.mark.parametrize("side", [4, 5])
def test_cnn_rejects_too_small_image_size(side):
    with pytest.raises(ConfigError, match=rf"image_size={side} is too small for cnn; it needs at least 6"):
        models.make({"name": "cnn", "args": {"image_size": side}})


def test_cnn_class_rejects_too_small_image_size_directly():
    with pytest.raises(ValueError, match=r"image_size=4 is too small"):
        models.cnn.Net(image_size=4)


# ---------------------------------------------------------------- tiny_cnn / mlp / resnet18


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_tiny_cnn_parameter_count():
    n = _n_params(models.make({"name": "tiny_cnn"}))
    assert 5_000 < n < 10_000, n


def test_tiny_cnn_accepts_any_image_size():
    model = models.make({"name": "tiny_cnn"})
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_mlp_without_hidden_layers_is_a_single_linear():
    model = models.make({"name": "mlp", "args": {"hidden": [], "in_dim": 784, "out_dim": 10}})
    layers = [m for m in model.modules() if list(m.parameters(recurse=False))]
    assert len(layers) == 1
    assert isinstance(layers[0], nn.Linear)
    assert (layers[0].in_features, layers[0].out_features) == (784, 10)
    assert _n_params(model) == 784 * 10 + 10
    assert model(_mnist_batch()).shape == (2, 10)


def test_mlp_hidden_layers_and_dropout():
    model = models.make({"name": "mlp", "args": {"hidden": [64, 32], "dropout": 0.5}})
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 64), (64, 32), (32, 10)]
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 2


def test_mlp_default_hidden_layer():
    linears = [m for m in models.make({"name": "mlp"}).modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [256, 10]


def test_resnet18_small_input_stem():
    model = models.make({"name": "resnet18", "args": {"in_channels": 1}})
    assert model.conv1.in_channels == 1
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert model.fc.out_features == 10


def test_resnet18_large_input_stem_with_one_channel():
    model = models.make({"name": "resnet18", "args": {"in_channels": 1, "small_input": False}})
    assert model.conv1.in_channels == 1
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert not isinstance(model.maxpool, nn.Identity)
    assert model.eval()(torch.randn(2, 1, 64, 64)).shape == (2, 10)


def test_model_unknown_argument_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model 'mlp' got an unknown argument 'hiden' \(did you mean 'hidden'\?\)"):
        models.make({"name": "mlp", "args": {"hiden": [8]}})


# ---------------------------------------------------------------- every registered loss


def _class_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 10, generator=g), torch.randint(0, 10, (6,), generator=g)


def _log_prob_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    logits, labels = _class_inputs()
    return F.log_softmax(logits, dim=1), labels


def _float_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 3, generator=g), torch.rand(6, 3, generator=g)


def _prob_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    output, target = _float_inputs()
    return torch.sigmoid(output), target


LOSS_INPUTS = {
    "bce": _prob_inputs,
    "ce": _class_inputs,
    "mnist_ce": _class_inputs,
    "nll": _log_prob_inputs,
    "mse": _float_inputs,
    "l1": _float_inputs,
    "bce_logits": _float_inputs,
    "smooth_l1": _float_inputs,
    "huber": _float_inputs,
}


def test_loss_inputs_only_name_registered_losses():
    stale = set(LOSS_INPUTS) - set(losses.registry.keys())
    assert not stale, f"LOSS_INPUTS names losses that are not registered: {sorted(stale)}"


@pytest.mark.parametrize("name", losses.registry.keys())
def test_registered_loss_is_a_finite_scalar(name):
    loss = losses.make({"name": name})
    # a loss missing from LOSS_INPUTS must work on one of the two usual input kinds
    candidates = [LOSS_INPUTS[name]] if name in LOSS_INPUTS else [_class_inputs, _float_inputs]
    errors = []
    for make_inputs in candidates:
        output, target = make_inputs()
        output.requires_grad_(True)
        try:
            value = loss(output, target)
        except (RuntimeError, ValueError, TypeError) as e:
            errors.append(f"{make_inputs.__name__}: {e}")
            continue
        assert isinstance(value, torch.Tensor)
        assert value.dim() == 0
        assert torch.isfinite(value)
        value.backward()
        assert output.grad is not None and torch.isfinite(output.grad).all()
        return
    pytest.fail(f"loss '{name}' failed on every input kind; add it to LOSS_INPUTS: {errors}")


def test_mnist_ce_equals_cross_entropy():
    logits, labels = _class_inputs()
    torch.testing.assert_close(losses.make({"name": "mnist_ce"})(logits, labels),
                               F.cross_entropy(logits, labels))


def test_nll_after_log_softmax_equals_cross_entropy():
    logits, labels = _class_inputs()
    torch.testing.assert_close(losses.make({"name": "nll"})(F.log_softmax(logits, 1), labels),
                               F.cross_entropy(logits, labels))


@pytest.mark.parametrize("name", ["ce", "mnist_ce"])
def test_label_smoothing_is_honoured(name):
    logits, labels = _class_inputs()
    smoothed = losses.make({"name": name, "args": {"label_smoothing": 0.2}})(logits, labels)
    plain = losses.make({"name": name})(logits, labels)
    torch.testing.assert_close(smoothed, F.cross_entropy(logits, labels, label_smoothing=0.2))
    assert not torch.allclose(smoothed, plain)


@pytest.mark.parametrize("name, expected", [
    ("mse", lambda o, t: ((o - t) ** 2).mean()),
    ("l1", lambda o, t: (o - t).abs().mean()),
    ("bce_logits", lambda o, t: F.binary_cross_entropy(torch.sigmoid(o), t)),
])
def test_float_losses_match_their_definition(name, expected):
    output, target = _float_inputs()
    torch.testing.assert_close(losses.make({"name": name})(output, target), expected(output, target))


def test_unknown_loss_suggests_a_close_name():
    with pytest.raises(ConfigError, match=r"unknown loss 'mnist_c' \(did you mean 'mnist_ce'"):
        losses.make({"name": "mnist_c"})
