"""Loss functions, pure: tensors in, a scalar tensor out; the trainer calls backward().

Notation follows the CycleGAN paper: G (X→Y), F (Y→X), D_Y judges G's output, D_X judges F's.
Discriminators return raw logits (or scores, for WGAN); each objective applies its own link.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

GanMode = Literal["lsgan", "vanilla", "wgangp", "hinge"]
GAN_MODES: tuple[GanMode, ...] = ("lsgan", "vanilla", "wgangp", "hinge")
ReconLoss = Literal["l1", "mse"]


def generator_adversarial_loss(mode: GanMode, fake_logits: Tensor) -> Tensor:
    """What the generator minimises so that D calls its output real."""
    if mode == "lsgan":
        return nnf.mse_loss(fake_logits, torch.ones_like(fake_logits))
    if mode == "vanilla":
        return nnf.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if mode in ("wgangp", "hinge"):
        return -fake_logits.mean()
    raise ValueError(f"unknown GAN objective {mode!r}; choose one of {', '.join(GAN_MODES)}")


def discriminator_loss(mode: GanMode, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """D's objective on one real and one (detached) fake batch.

    lsgan and vanilla are halved as in CycleGAN, which slows D relative to G.
    WGAN-GP's gradient penalty is separate (`gradient_penalty`), it needs D itself.
    """
    if mode == "lsgan":
        real = nnf.mse_loss(real_logits, torch.ones_like(real_logits))
        fake = nnf.mse_loss(fake_logits, torch.zeros_like(fake_logits))
        return 0.5 * (real + fake)
    if mode == "vanilla":
        real = nnf.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = nnf.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return 0.5 * (real + fake)
    if mode == "wgangp":
        return fake_logits.mean() - real_logits.mean()
    if mode == "hinge":
        return nnf.relu(1.0 - real_logits).mean() + nnf.relu(1.0 + fake_logits).mean()
    raise ValueError(f"unknown GAN objective {mode!r}; choose one of {', '.join(GAN_MODES)}")


def gradient_penalty(
    discriminator: nn.Module | Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    target_norm: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP: (‖∇D(x̂)‖₂ − 1)² on random interpolates x̂ of real and fake (Gulrajani 2017)."""
    alpha = torch.rand(
        real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype, generator=generator
    )
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = discriminator(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    return ((norms - target_norm) ** 2).mean()


def cycle_loss(reconstructed: Tensor, original: Tensor) -> Tensor:
    """‖F(G(x)) − x‖₁ (mean over pixels)."""
    return nnf.l1_loss(reconstructed, original)


def identity_loss(same_domain_output: Tensor, original: Tensor) -> Tensor:
    """‖G(y) − y‖₁: keeps colours when the input already looks like the target domain."""
    return nnf.l1_loss(same_domain_output, original)


def reconstruction_loss(reconstructed: Tensor, original: Tensor, kind: ReconLoss = "mse") -> Tensor:
    """DiscoGAN's reconstruction constraint; the paper's reference code uses MSE."""
    if kind == "mse":
        return nnf.mse_loss(reconstructed, original)
    if kind == "l1":
        return nnf.l1_loss(reconstructed, original)
    raise ValueError(f"unknown reconstruction loss {kind!r}; choose 'mse' or 'l1'")


def patch_nce_loss(query: Tensor, key: Tensor, *, batch_size: int, temperature: float) -> Tensor:
    """PatchNCE (Park et al. 2020): each output patch's embedding must pick out the input patch
    at the same position among all the patches of the same image (InfoNCE, temperature-scaled
    cosine similarities). `query`, `key`: (B * P, D) unit vectors, image-major; the keys carry
    no gradient. Returns the (B * P,) per-patch losses.
    """
    n, dim = query.shape
    query, key = query.float(), key.detach().float()
    positive = (query * key).sum(dim=1, keepdim=True)  # (B*P, 1)
    q, k = query.view(batch_size, -1, dim), key.view(batch_size, -1, dim)
    patches = q.shape[1]
    negative = torch.bmm(q, k.transpose(2, 1))  # (B, P, P): every pair within an image
    same = torch.eye(patches, dtype=torch.bool, device=query.device)[None]
    negative = negative.masked_fill(same, -10.0).view(-1, patches)  # the positive is not one
    logits = torch.cat([positive, negative], dim=1) / temperature
    target = torch.zeros(n, dtype=torch.long, device=query.device)
    return nnf.cross_entropy(logits, target, reduction="none")
