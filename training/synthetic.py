"""Synthetic unpaired domain pairs with a known ground-truth mapping.

Real datasets cannot be downloaded here, and real unpaired data has no ground truth anyway.
Each pair below renders one random *scene* (a few shapes with colours) in two appearances,
domain A and domain B. Training samples A and B from independent scenes (unpaired); the
test split renders the same scene both ways, so G(x) can be scored against the truth.

Every pair keeps geometry and changes appearance with a spatial component (outlines, bands
that follow the shape's contour, shading and a cast shadow), so a per-pixel colour lookup
cannot solve it. Every mapping is a bijection on the pair's support, so both directions
are identifiable from unpaired data.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "PAIRS",
    "Scene",
    "SyntheticPair",
    "UnknownDatasetError",
    "get_pair",
    "make_scene",
    "pair_names",
]

Split = str  # "train" | "test"


@dataclass(frozen=True)
class Scene:
    """Geometry and colours shared by both renderings of one sample."""

    labels: np.ndarray  # (H, W) int: 0 background, k = shape k (later shapes on top)
    colours: np.ndarray  # (K + 1, 3) float in [0, 1]; row 0 unused


Renderer = Callable[[Scene], np.ndarray]  # -> (H, W, 3) float in [0, 1]
ColourSampler = Callable[[np.random.Generator, int], np.ndarray]


@dataclass(frozen=True)
class SyntheticPair:
    """A named domain pair: how scenes are coloured and how each domain renders them."""

    name: str
    domain_a: str
    domain_b: str
    description: str
    sample_colours: ColourSampler
    render_a: Renderer
    render_b: Renderer

    def render(self, scene: Scene, domain: str) -> np.ndarray:
        """Render `scene` in domain "A" or "B" as uint8 (H, W, 3)."""
        rgb = self.render_a(scene) if domain == "A" else self.render_b(scene)
        return _to_uint8(rgb)

    def scene(self, *, seed: int, split: Split, domain: str, index: int, size: int) -> Scene:
        """The scene of sample `index` in a split's domain stream (pure function of its args).

        Train streams of A and B draw different scenes (unpaired); the test split uses one
        scene stream for both, so testA[i] and testB[i] show the same geometry and each is the
        other's ground truth.
        """
        stream = "both" if split == "test" else domain
        rng = np.random.default_rng([seed, _tag(self.name), _tag(split), _tag(stream), index])
        return make_scene(rng, size, self.sample_colours)


def _tag(text: str) -> int:
    return zlib.crc32(text.encode())


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# --- geometry -----------------------------------------------------------------------------


def make_scene(rng: np.random.Generator, size: int, sample_colours: ColourSampler) -> Scene:
    """Draw 1-3 shapes (ellipses, rotated rectangles, triangles) of varied size and place."""
    n_shapes = int(rng.integers(1, 4))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    labels = np.zeros((size, size), dtype=np.int32)
    for k in range(1, n_shapes + 1):
        mask = _random_shape(rng, xx, yy, size)
        labels[mask] = k
    return Scene(labels=labels, colours=sample_colours(rng, n_shapes + 1))


def _random_shape(
    rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, size: int
) -> np.ndarray:
    cx, cy = rng.uniform(0.2, 0.8, size=2) * size
    a, b = rng.uniform(0.12, 0.3, size=2) * size
    theta = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    kind = int(rng.integers(3))
    if kind == 0:
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if kind == 1:
        return (np.abs(u) <= a) & (np.abs(v) <= b * 0.8)
    # isosceles triangle: apex at v = -b, base at v = +b
    return (v <= b) & (np.abs(u) <= a * (v + b) / (2 * b))


def _shape_distance(labels: np.ndarray) -> np.ndarray:
    """Distance (px) of each pixel to the nearest pixel outside its own shape; 0 on background.

    Computed per shape so touching shapes keep their own contours.
    """
    dist = np.zeros(labels.shape, dtype=np.float32)
    for k in np.unique(labels):
        if k == 0:
            continue
        inside = labels == k
        dist[inside] = ndimage.distance_transform_edt(inside)[inside]
    return dist


def _vertical_gradient(size: int, top: tuple[float, ...], bottom: tuple[float, ...]) -> np.ndarray:
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    row = (1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32)
    return np.broadcast_to(row, (size, size, 3)).copy()


def _paint(background: np.ndarray, labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    rgb = background.copy()
    inside = labels > 0
    rgb[inside] = colours[labels[inside]]
    return rgb


# --- colour samplers ----------------------------------------------------------------------


def _saturated_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """Bright colours, hue skewed towards warm tones (Beta(2, 5): mostly reds to greens, few
    blues). A uniform hue would let a hue rotation pass for the right mapping, since it maps
    the domain onto itself; a skewed one pins the mapping down."""
    hue = rng.beta(2.0, 5.0, n)
    sat = rng.uniform(0.55, 0.95, n)
    val = rng.uniform(0.7, 1.0, n)
    return _hsv_to_rgb(hue, sat, val)


def _earth_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """Horse-like browns and tans."""
    hue = rng.uniform(0.03, 0.11, n)
    sat = rng.uniform(0.45, 0.85, n)
    val = rng.uniform(0.35, 0.85, n)
    return _hsv_to_rgb(hue, sat, val)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack(
        [
            np.stack([v, t, p], -1),
            np.stack([q, v, p], -1),
            np.stack([p, v, t], -1),
            np.stack([p, q, v], -1),
            np.stack([t, p, v], -1),
            np.stack([v, p, q], -1),
        ]
    )
    return table[i, np.arange(len(h))].astype(np.float32)


# --- pair: day2night ------------------------------------------------------------------------

_DAY_SKY = ((0.55, 0.75, 0.95), (0.9, 0.93, 0.97))
_NIGHT_SKY = ((0.02, 0.03, 0.12), (0.1, 0.1, 0.25))
_NIGHT_DIM = 0.4
_GLOW = np.asarray((1.0, 0.85, 0.35), np.float32)


def _glow_width(size: int) -> float:
    return max(1.0, size / 32)


def _flat_on_gradient(top: tuple[float, ...], bottom: tuple[float, ...]) -> Renderer:
    """Shapes in their own colours over a vertical gradient (day sky, grass)."""

    def render(scene: Scene) -> np.ndarray:
        size = scene.labels.shape[0]
        return _paint(_vertical_gradient(size, top, bottom), scene.labels, scene.colours)

    return render


def _render_night(scene: Scene) -> np.ndarray:
    """Dark sky, dimmed shapes, and a lit rim along each shape's inner contour."""
    size = scene.labels.shape[0]
    rgb = _paint(_vertical_gradient(size, *_NIGHT_SKY), scene.labels, scene.colours * _NIGHT_DIM)
    rim = (scene.labels > 0) & (_shape_distance(scene.labels) <= _glow_width(size))
    rgb[rim] = _GLOW
    return rgb


# --- pair: solid2stripes (horse -> zebra) ----------------------------------------------------

_GRASS = ((0.3, 0.55, 0.2), (0.2, 0.42, 0.12))
_SAVANNA = ((0.93, 0.85, 0.55), (0.8, 0.68, 0.38))
_LIGHT_BAND = 0.7  # band colour = c * 0.3 (dark band) or 0.7 + c * 0.3 (light band)


def _stripe_period(size: int) -> float:
    return max(4.0, size / 10)


def _render_striped(scene: Scene) -> np.ndarray:
    """Bands that follow each shape's contour (like a zebra's stripes follow its body).

    The band is a function of the distance to the shape's edge, so it is fixed by geometry
    (no arbitrary phase): both directions stay identifiable.
    """
    size = scene.labels.shape[0]
    rgb = _vertical_gradient(size, *_SAVANNA)
    inside = scene.labels > 0
    band = (np.floor(_shape_distance(scene.labels) / (_stripe_period(size) / 2)) % 2).astype(bool)
    base = scene.colours[scene.labels] * (1 - _LIGHT_BAND)
    light = base + _LIGHT_BAND
    rgb[inside] = np.where(band[..., None], light, base)[inside]
    return rgb


# --- pair: flat2relief ------------------------------------------------------------------------

_FLAT_BG = (0.5, 0.5, 0.5)
_PAPER = np.asarray((0.88, 0.8, 0.64), np.float32)
_SHADOW_DARKEN = 0.55


def _render_flat(scene: Scene) -> np.ndarray:
    size = scene.labels.shape[0]
    background = np.broadcast_to(np.asarray(_FLAT_BG, np.float32), (size, size, 3)).copy()
    return _paint(background, scene.labels, scene.colours)


def _render_relief(scene: Scene) -> np.ndarray:
    """Shapes raised like bevelled tiles lit from the top-left, casting a shadow on paper."""
    size = scene.labels.shape[0]
    bevel = max(2.0, size / 12)
    offset = max(1, round(size / 20))
    inside = scene.labels > 0
    height = np.minimum(_shape_distance(scene.labels), bevel) / bevel  # 0 at edge, 1 on top
    gy, gx = np.gradient(height)
    shade = np.clip(1.0 + 1.6 * (gx + gy) * bevel / 2, 0.45, 1.45)  # light from top-left
    shadow = np.zeros_like(inside)
    shadow[offset:, offset:] = inside[:-offset, :-offset]
    rgb = np.broadcast_to(_PAPER, (size, size, 3)).copy()
    rgb[shadow & ~inside] *= _SHADOW_DARKEN
    lit = scene.colours[scene.labels] * 0.68 * shade[..., None]
    rgb[inside] = lit[inside]
    return rgb


PAIRS: dict[str, SyntheticPair] = {
    pair.name: pair
    for pair in (
        SyntheticPair(
            name="day2night",
            domain_a="day",
            domain_b="night",
            description="sky scene by day -> by night: dark sky, dimmed shapes, lit rims",
            sample_colours=_saturated_colours,
            render_a=_flat_on_gradient(*_DAY_SKY),
            render_b=_render_night,
        ),
        SyntheticPair(
            name="solid2stripes",
            domain_a="solid",
            domain_b="striped",
            description="brown shapes on grass -> contour-striped shapes on savanna (horse2zebra)",
            sample_colours=_earth_colours,
            render_a=_flat_on_gradient(*_GRASS),
            render_b=_render_striped,
        ),
        SyntheticPair(
            name="flat2relief",
            domain_a="flat",
            domain_b="relief",
            description="flat shapes on grey -> bevelled, lit shapes casting shadows on paper",
            sample_colours=_saturated_colours,
            render_a=_render_flat,
            render_b=_render_relief,
        ),
    )
}


class UnknownDatasetError(ValueError):
    """A built-in dataset name that does not exist; the message lists the real ones."""


def pair_names() -> list[str]:
    return sorted(PAIRS)


def get_pair(name: str) -> SyntheticPair:
    try:
        return PAIRS[name]
    except KeyError:
        raise UnknownDatasetError(
            f"unknown synthetic dataset {name!r}; built-in pairs: {', '.join(pair_names())}"
        ) from None
