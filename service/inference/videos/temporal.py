"""Frame-by-frame translation without flicker, and how much flicker is left.

A generator translates each frame on its own, so its texture jumps with every sub-pixel move of
the camera. :class:`Stabiliser` blends each translated frame with the previous *output*, moved
along the input's optical flow, wherever that pixel was visible in the previous frame:

    out_t = (1 - s * m) * translated_t + s * m * warp(out_{t-1})

with `s` the strength and `m` the (softened) visibility mask. Recursively applied, this is an
exponential average along motion trajectories: higher strength is steadier, lower is closer to
each frame's own translation (and leaves less trail behind a flow error). A frame whose
visible share drops below ``cut_share`` starts a new scene: nothing is blended across a cut,
so it cannot ghost.

The warping error (Lai et al. 2018, "Learning Blind Video Temporal Consistency") is measured
on the way: for each consecutive pair, output t-1 warped to t with the *input*'s flow, the
occluded pixels masked by the forward-backward check, the mean squared difference over the
visible pixels and the RGB channels in [0, 1]; averaged over the pairs (pairs across a scene cut
are left out). The same number is taken of the input clip itself, its floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import cv2
import numpy as np

from service.inference.videos.flow import Motion, estimate_motion, warp
from service.inference.videos.options import TemporalMode, TemporalOptions

__all__ = ["Stabiliser", "TemporalMode", "TemporalOptions", "WarpingError"]

#: Softening of the visibility mask's edges (pixels, Gaussian sigma): no seam where the blend
#: switches off around an occlusion.
_MASK_SIGMA: Final = 1.5


@dataclass
class WarpingError:
    """The running mean of the per-pair warping error."""

    total: float = 0.0
    pairs: int = 0

    def add(self, current: np.ndarray, previous: np.ndarray, motion: Motion) -> None:
        mask = motion.consistent
        if not mask.any():
            return
        moved = warp(previous, motion.backward).astype(np.float32) / 255.0
        diff = (current.astype(np.float32) / 255.0 - moved) ** 2
        self.total += float(diff[mask].mean())
        self.pairs += 1

    @property
    def value(self) -> float | None:
        return self.total / self.pairs if self.pairs else None


@dataclass
class Stabiliser:
    """One clip's temporal state: feed it each input frame with its translation, in order."""

    options: TemporalOptions = field(default_factory=TemporalOptions)
    output_error: WarpingError = field(default_factory=WarpingError)
    input_error: WarpingError = field(default_factory=WarpingError)
    cuts: list[int] = field(default_factory=list)  # frame indices that start a new scene
    _frame: int = 0
    _previous_input: np.ndarray | None = None
    _previous_output: np.ndarray | None = None

    def step(self, frame: np.ndarray, translated: np.ndarray) -> np.ndarray:
        """The output for `frame` (uint8 RGB), given its own translation."""
        output = translated
        if self._previous_input is not None and self._previous_output is not None:
            motion = estimate_motion(self._previous_input, frame)
            if motion.visible_share < self.options.cut_share:
                self.cuts.append(self._frame)
            else:
                if self.options.mode == "blend" and self.options.strength > 0:
                    output = self._blend(translated, self._previous_output, motion)
                self.output_error.add(output, self._previous_output, motion)
                self.input_error.add(frame, self._previous_input, motion)
        self._previous_input, self._previous_output = frame, output
        self._frame += 1
        return output

    def _blend(self, translated: np.ndarray, previous: np.ndarray, motion: Motion) -> np.ndarray:
        mask = cv2.GaussianBlur(motion.visible.astype(np.float32), (0, 0), _MASK_SIGMA)
        weight = (self.options.strength * mask)[..., None]
        moved = warp(previous, motion.backward).astype(np.float32)
        mixed = translated.astype(np.float32) * (1.0 - weight) + moved * weight
        return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
