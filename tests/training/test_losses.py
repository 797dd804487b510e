import pytest
import torch
from torch import nn

from training import losses


def test_lsgan_is_zero_at_its_targets_and_positive_elsewhere() -> None:
    ones, zeros = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert losses.discriminator_loss("lsgan", ones, zeros).item() == 0
    assert losses.generator_adversarial_loss("lsgan", ones).item() == 0
    # D fooled completely: (1/2)(mean((0-1)^2) + mean((1-0)^2)) = 1
    assert losses.discriminator_loss("lsgan", zeros, ones).item() == pytest.approx(1.0)


def test_vanilla_is_binary_cross_entropy_on_logits() -> None:
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    expected = 0.5 * (
        -torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean()
    )
    assert losses.discriminator_loss("vanilla", real, fake).item() == pytest.approx(expected.item())
    g = -torch.log(torch.sigmoid(fake)).mean()
    assert losses.generator_adversarial_loss("vanilla", fake).item() == pytest.approx(g.item())


def test_hinge_is_zero_beyond_the_margin() -> None:
    assert losses.discriminator_loss("hinge", torch.full((3,), 2.0), torch.full((3,), -2.0)) == 0
    assert losses.discriminator_loss("hinge", torch.zeros(3), torch.zeros(3)).item() == 2.0
    assert losses.generator_adversarial_loss("hinge", torch.tensor([1.0, 3.0])).item() == -2.0


def test_wgan_critic_and_gradient_penalty() -> None:
    real, fake = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    assert losses.discriminator_loss("wgangp", torch.ones(4), torch.zeros(4)).item() == -1.0

    def unit_gradient(x: torch.Tensor) -> torch.Tensor:  # ‖∇‖ = 1 everywhere
        return x[:, 0, 0, 0]

    def steep(x: torch.Tensor) -> torch.Tensor:  # ‖∇‖ = 3 everywhere
        return 3 * x[:, 0, 0, 0]

    assert losses.gradient_penalty(unit_gradient, real, fake).item() == pytest.approx(0.0)
    assert losses.gradient_penalty(steep, real, fake).item() == pytest.approx(4.0)
    # the penalty is differentiable w.r.t. D's parameters (double backward)
    conv = nn.Conv2d(3, 1, 3)
    losses.gradient_penalty(conv, real, fake).backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_reconstruction_terms() -> None:
    x = torch.zeros(1, 3, 4, 4)
    y = torch.full((1, 3, 4, 4), 0.5)
    assert losses.cycle_loss(y, x).item() == 0.5
    assert losses.identity_loss(y, x).item() == 0.5
    assert losses.reconstruction_loss(y, x, "mse").item() == 0.25
    assert losses.reconstruction_loss(y, x, "l1").item() == 0.5


def test_unknown_objective_is_rejected() -> None:
    with pytest.raises(ValueError, match="lsgan, vanilla"):
        losses.generator_adversarial_loss("ragan", torch.zeros(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lsgan, vanilla"):
        losses.discriminator_loss("ragan", torch.zeros(1), torch.zeros(1))  # type: ignore[arg-type]
