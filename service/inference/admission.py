"""Admission by memory: a process takes on only the images its memory can hold.

Queues bound their length; an image's cost is its pixels. Every request reserves what its image
will need (:func:`working_bytes`, from the size its header declares, before a pixel is
decoded) from the process's :class:`MemoryBudget`, and gives it back when the batcher and the
encoder are done with it. A request that does not fit now is answered
:class:`~service.errors.OverBudget` (503 with ``Retry-After``) at once; bulk work waits for room
instead (its producers are bounded). Large (tiled) images together may hold at most
``large_share`` of the budget, so small requests always find room beside them.

After a large image, :func:`return_freed_memory` hands the pages glibc keeps to the OS, so
the process's resident size comes back down instead of staying at its peak.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from service.errors import ImageTooLarge, OverBudget, WorkDropped
from service.settings import Settings

__all__ = [
    "ACTIVATION_BYTES_PER_CHANNEL",
    "MemoryBudget",
    "Reservation",
    "budget_bytes",
    "default_budget_bytes",
    "return_freed_memory",
    "working_bytes",
]

#: Bytes per pixel a whole image costs outside the network, as measured on this machine
#: (``bench/heavy.py``): the encoded upload and answer, PIL's decoded copy (4 bytes a pixel
#: for RGB) and the uint8 arrays (3 each way), and the encoder's working copy, with room for
#: alpha.
IMAGE_BYTES_PER_PIXEL: Final = 16
#: Network working memory per pixel per channel of the widest full-resolution activation
#: (float32 activations, onnxruntime's layout copies): measured 17.4 on the demo model's
#: ResNet (ngf 16, 278 bytes a pixel for 512x512 tiles), rounded up.
ACTIVATION_BYTES_PER_CHANNEL: Final = 20
#: Float copies of the input and output batch (float32, 3 channels each way).
_BATCH_FLOAT_BYTES: Final = 24
#: Rows of tiles whose float sums the blender holds at most, and bytes a pixel of them.
_BAND_TILE_ROWS: Final = 2
_BAND_BYTES_PER_PIXEL: Final = 16 * 2  # sums (12) + weights (4), doubled: emitting, headroom


def working_bytes(
    height: int,
    width: int,
    *,
    padded: tuple[int, int],
    tile: int | None,
    tile_batch: int,
    widest_channels: int,
    stats_pixels: int = 0,
) -> int:
    """Peak bytes translating one image costs, to reserve before decoding it.

    Untiled (``tile`` None): the image, plus the padded image's float copies and the network's
    activations. Tiled: the image, plus the blender's band of rows (two tile heights of the
    padded width) and the larger of the two network calls it makes: one batch of tiles, or
    the statistics pass over a thumbnail of ``stats_pixels`` (up to 1 Mpx by default: twice
    a CPU's batch of two 512x512 tiles).
    """
    image = IMAGE_BYTES_PER_PIXEL * height * width
    per_network_pixel = _BATCH_FLOAT_BYTES + ACTIVATION_BYTES_PER_CHANNEL * widest_channels
    if tile is None:
        return image + padded[0] * padded[1] * per_network_pixel
    band = _BAND_TILE_ROWS * tile * padded[1] * _BAND_BYTES_PER_PIXEL
    batch = tile_batch * min(tile, padded[0]) * min(tile, padded[1])
    return image + band + max(batch, stats_pixels) * per_network_pixel


class Reservation:
    """Bytes held in a budget until every holder released them (the caller that encodes the
    answer, and the batcher while it still has the image)."""

    def __init__(self, budget: MemoryBudget, nbytes: int, *, large: bool) -> None:
        self.budget = budget
        self.nbytes = nbytes
        self.large = large
        self._holders = 1
        self._lock = threading.Lock()

    def hold(self) -> Reservation:
        """One more holder; each calls :meth:`release` once."""
        with self._lock:
            if self._holders == 0:
                raise RuntimeError("the reservation was already released")
            self._holders += 1
        return self

    def release(self) -> None:
        with self._lock:
            if self._holders == 0:
                return
            self._holders -= 1
            if self._holders:
                return
        self.budget._give_back(self)


@dataclass
class _Usage:
    used: int = 0
    large: int = 0
    peak: int = 0
    refused: int = 0


class MemoryBudget:
    """Bytes of working memory the images in flight in this process may hold."""

    def __init__(self, capacity: int, *, large_share: float = 0.75) -> None:
        if capacity < 1 or not 0 < large_share <= 1:
            raise ValueError(
                f"need capacity >= 1 and 0 < large_share <= 1, got {capacity}, {large_share}"
            )
        self.capacity = capacity
        self.large_capacity = int(capacity * large_share)
        self._usage = _Usage()
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        return self._usage.used

    @property
    def large_used(self) -> int:
        return self._usage.large

    @property
    def peak(self) -> int:
        """The most bytes reserved at once since start."""
        return self._usage.peak

    @property
    def refused(self) -> int:
        """Requests answered 503 because they did not fit."""
        return self._usage.refused

    def describe(self) -> dict[str, int]:
        usage = self._usage
        return {
            "capacity_bytes": self.capacity,
            "large_capacity_bytes": self.large_capacity,
            "used_bytes": usage.used,
            "large_used_bytes": usage.large,
            "peak_bytes": usage.peak,
            "refused": usage.refused,
        }

    def try_reserve(self, nbytes: int, *, large: bool, what: str = "the image") -> Reservation:
        """Reserve now or raise :class:`OverBudget` (try again later), or
        :class:`ImageTooLarge` when it could never fit."""
        self._check_fits_ever(nbytes, large=large, what=what)
        with self._cond:
            if not self._fits(nbytes, large):
                self._usage.refused += 1
                raise OverBudget(
                    f"{what} needs {_mb(nbytes)} of working memory and "
                    f"{_mb(self._room(large))} of this server's "
                    f"{_mb(self.large_capacity if large else self.capacity)} is free now"
                )
            return self._take(nbytes, large)

    def reserve(
        self,
        nbytes: int,
        *,
        large: bool,
        what: str = "the image",
        should_stop: Callable[[], bool] | None = None,
        poll_s: float = 0.5,
    ) -> Reservation:
        """Wait until it fits (bulk work); raises :class:`WorkDropped` if ``should_stop()``
        says nobody waits any more, :class:`ImageTooLarge` when it could never fit."""
        self._check_fits_ever(nbytes, large=large, what=what)
        with self._cond:
            while not self._fits(nbytes, large):
                if should_stop is not None and should_stop():
                    raise WorkDropped(f"{what} was still waiting for memory when it was dropped")
                self._cond.wait(poll_s)
            return self._take(nbytes, large)

    def _check_fits_ever(self, nbytes: int, *, large: bool, what: str) -> None:
        limit = self.large_capacity if large else self.capacity
        if nbytes > limit:
            raise ImageTooLarge(
                f"{what} needs {_mb(nbytes)} of working memory, more than this server's "
                f"budget of {_mb(limit)} for {'large ' if large else ''}images "
                "(UNPAIRED_MEMORY_BUDGET_MB); send a smaller image"
            )

    def _room(self, large: bool) -> int:
        room = self.capacity - self._usage.used
        if large:
            room = min(room, self.large_capacity - self._usage.large)
        return max(0, room)

    def _fits(self, nbytes: int, large: bool) -> bool:
        return nbytes <= self._room(large)

    def _take(self, nbytes: int, large: bool) -> Reservation:
        usage = self._usage
        usage.used += nbytes
        if large:
            usage.large += nbytes
        usage.peak = max(usage.peak, usage.used)
        return Reservation(self, nbytes, large=large)

    def _give_back(self, reservation: Reservation) -> None:
        with self._cond:
            self._usage.used -= reservation.nbytes
            if reservation.large:
                self._usage.large -= reservation.nbytes
            self._cond.notify_all()
        if reservation.large:
            return_freed_memory()


def _mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MB"


# --- the machine ----------------------------------------------------------------------------

#: Share of the memory available at start that images in flight may take by default; the rest
#: is the process itself (models, runtimes) and whatever else runs on the machine.
DEFAULT_SHARE: Final = 0.5


def _read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def _available_bytes() -> int:
    """Memory this process can use: MemAvailable, capped by a cgroup (container) limit."""
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    with contextlib.suppress(OSError, ValueError):
        for line in _read("/proc/meminfo").splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    for path, usage_path in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        with contextlib.suppress(OSError, ValueError):
            limit = _read(path).strip()
            if limit != "max" and int(limit) < 2**60:
                available = min(available, int(limit) - int(_read(usage_path).strip()))
                break
    return max(available, 0)


def default_budget_bytes() -> int:
    """Half the memory available now (an image that needs more is refused with a 413 that
    names the budget, rather than admitted to run the machine out of memory)."""
    return max(int(_available_bytes() * DEFAULT_SHARE), 1)


def budget_bytes(settings: Settings) -> int:
    """The budget `settings` give this process: UNPAIRED_MEMORY_BUDGET_MB, else the default."""
    if settings.memory_budget_mb is not None:
        return settings.memory_budget_mb * 2**20
    return default_budget_bytes()


_LIBC: Final = ctypes.util.find_library("c")


def return_freed_memory() -> None:
    """Give the OS back the free pages glibc's heaps keep (``malloc_trim``; a no-op without
    glibc): after a large image, its freed tile buffers and PIL's blocks would otherwise stay
    resident. Called when a large image's memory is given back, so a few times a minute."""
    if _LIBC is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(_LIBC).malloc_trim(0)
