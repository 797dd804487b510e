"""Motion between consecutive input frames, and where it can be trusted.

Flow is computed on the *input* frames (a translated frame's texture is what flickers, so its
own motion cannot be trusted) with OpenCV's DIS (Kroeger et al. 2016: classical, fast, no
weights to download), on a copy no larger than :data:`FLOW_SIDE` pixels on its long side and
scaled back up. A pixel is visible in the previous frame when the forward and backward flows
agree (Sundaram et al. 2010's check, as in Ruder et al. 2016 and Lai et al. 2018): the warping
error's mask. The blend also asks that its colour there matches (a light switched on, a flow
error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np

__all__ = ["FLOW_SIDE", "Motion", "estimate_motion", "warp"]

#: The long side flow is computed at; larger frames are downscaled for it (speed, and DIS is
#: tuned for motion of a few tens of pixels).
FLOW_SIDE: Final = 640

#: A pixel whose colour differs by more than this (mean over RGB, 0-255) from its warped
#: predecessor is treated as newly visible (lighting change, a flow error).
_COLOUR_TOLERANCE: Final = 24.0


@dataclass(frozen=True)
class Motion:
    """How frame t relates to frame t-1 at full resolution."""

    backward: np.ndarray  # float32 (H, W, 2): where each pixel of t was in t-1 (dx, dy)
    consistent: np.ndarray  # bool (H, W): forward and backward flow agree (not occluded)
    visible: np.ndarray  # bool (H, W): consistent, and the colour matches there too

    @property
    def visible_share(self) -> float:
        return float(self.visible.mean())


def _grey(rgb: np.ndarray, scale: float) -> np.ndarray:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if scale == 1.0:
        return grey
    height, width = grey.shape
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def _dis() -> cv2.DISOpticalFlow:
    return cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)


def _upscale(flow: np.ndarray, height: int, width: int) -> np.ndarray:
    if flow.shape[:2] == (height, width):
        return flow
    scale_x, scale_y = width / flow.shape[1], height / flow.shape[0]
    full = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    full[..., 0] *= scale_x
    full[..., 1] *= scale_y
    return full


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return xs, ys


def warp(image: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """`image` (frame t-1's) moved to frame t: each pixel fetched from where the backward
    flow says it was (bilinear; outside the frame: the nearest edge)."""
    xs, ys = _grid(*backward.shape[:2])
    return cv2.remap(
        image,
        xs + backward[..., 0],
        ys + backward[..., 1],
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def estimate_motion(previous: np.ndarray, current: np.ndarray) -> Motion:
    """Backward flow from uint8 RGB frame `current` to `previous`, and the visibility mask
    (forward-backward consistency and matching colour)."""
    height, width = current.shape[:2]
    scale = min(1.0, FLOW_SIDE / max(height, width))
    prev_grey, cur_grey = _grey(previous, scale), _grey(current, scale)
    dis = _dis()
    small = np.zeros((*cur_grey.shape, 2), np.float32)  # filled in (no initial flow is used)
    backward = _upscale(np.array(dis.calc(cur_grey, prev_grey, small)), height, width)
    forward = _upscale(np.array(dis.calc(prev_grey, cur_grey, small.copy())), height, width)
    # forward flow at the position each pixel came from, added to the backward flow: ~0 where
    # the motion is consistent (the pixel was not hidden in t-1)
    returned = warp(forward, backward)
    round_trip = backward + returned
    squared = (round_trip**2).sum(axis=2)
    bound = 0.01 * ((backward**2).sum(axis=2) + (returned**2).sum(axis=2)) + 0.5
    xs, ys = _grid(height, width)
    source_x, source_y = xs + backward[..., 0], ys + backward[..., 1]
    inside = (source_x >= 0) & (source_x <= width - 1) & (source_y >= 0) & (source_y <= height - 1)
    colour = np.abs(warp(previous, backward).astype(np.float32) - current.astype(np.float32))
    matches = colour.mean(axis=2) <= _COLOUR_TOLERANCE
    consistent = (squared <= bound) & inside
    return Motion(backward=backward, consistent=consistent, visible=consistent & matches)
