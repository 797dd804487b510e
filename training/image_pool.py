"""The image pool of Shrivastava et al. 2017, as used by CycleGAN: D sees a mix of the newest
fakes and fakes from earlier steps, which damps oscillation between G and D.

Its randomness comes from its own generator and its contents are tensors, so a checkpoint can
store it exactly (no pickle) and a resumed run continues bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor


class ImagePool:
    def __init__(self, size: int, *, seed: int = 0) -> None:
        self.size = size
        self.images: list[Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: Tensor) -> Tensor:
        """Return a batch of the same size: each image is the new one, or (once the pool is full,
        with probability 1/2) a stored one that the new image replaces."""
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(1, generator=self.generator).item() > 0.5:
                slot = int(torch.randint(0, self.size, (1,), generator=self.generator).item())
                out.append(self.images[slot].clone())
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_tensors(self, prefix: str) -> dict[str, Tensor]:
        state = {f"{prefix}.rng": self.generator.get_state()}
        if self.images:
            state[f"{prefix}.images"] = torch.cat(self.images, 0).detach().cpu().contiguous()
        return state

    def load_state_tensors(
        self, prefix: str, tensors: dict[str, Tensor], device: torch.device
    ) -> None:
        self.generator.set_state(tensors[f"{prefix}.rng"])
        stacked = tensors.get(f"{prefix}.images")
        self.images = [] if stacked is None else [t.unsqueeze(0).to(device) for t in stacked]
