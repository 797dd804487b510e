"""CUT's projection head (``PatchSampleF`` with ``mlp_sample`` in taesungp's code), our own.

For each tapped feature map of the generator's encoder it takes the features at a set of
random positions (the same positions for the input's and the output's encoding, so that patch i
of one matches patch i of the other), passes them through a small two-layer MLP per layer and
L2-normalises them: the embeddings PatchNCE compares. Training-only: never exported.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.init import init_weights

__all__ = ["PatchSampleMLP"]


class PatchSampleMLP(nn.Module):
    """One Linear-ReLU-Linear head per tapped layer (`channels`: each layer's width)."""

    def __init__(
        self, channels: Sequence[int], *, units: int = 256, init_gain: float = 0.02
    ) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, units), nn.ReLU(), nn.Linear(units, units)) for c in channels
        )
        init_weights(self, "normal", init_gain)  # the reference initialises it like G

    def forward(
        self, features: Sequence[Tensor], num_patches: int, patch_ids: Sequence[Tensor] | None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """(B, C, H, W) maps -> (B * P, units) unit-length embeddings and the positions taken
        (drawn here when `patch_ids` is None, P = min(num_patches, H * W))."""
        embeddings, positions = [], []
        for index, (feature, mlp) in enumerate(zip(features, self.mlps, strict=True)):
            flat = feature.permute(0, 2, 3, 1).flatten(1, 2)  # (B, H*W, C)
            if patch_ids is None:
                ids = torch.randperm(flat.shape[1], device=feature.device)[:num_patches]
            else:
                ids = patch_ids[index]
            sample = mlp(flat[:, ids, :].flatten(0, 1))  # (B * P, units)
            norm = sample.pow(2).sum(1, keepdim=True).sqrt()
            embeddings.append(sample / (norm + 1e-7))
            positions.append(ids)
        return embeddings, positions
