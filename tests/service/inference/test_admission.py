"""The memory budget: what an image costs, who is admitted, and when memory is given back."""

from __future__ import annotations

import threading

import pytest

from service.errors import ImageTooLarge, OverBudget, QueueFull, WorkDropped, answer_for
from service.inference.admission import MemoryBudget, working_bytes

MB = 2**20


def test_a_request_that_does_not_fit_now_is_refused_as_a_retryable_503() -> None:
    budget = MemoryBudget(100 * MB)
    held = budget.try_reserve(80 * MB, large=False)
    with pytest.raises(OverBudget) as refused:
        budget.try_reserve(30 * MB, large=False, what="photo.jpg")
    assert "photo.jpg" in str(refused.value) and "20 MB" in str(refused.value)
    answer = answer_for(refused.value)
    assert answer is not None and (answer.status, answer.code) == (503, "over_budget")
    assert answer.headers() == {"Retry-After": "1"}
    assert isinstance(refused.value, QueueFull)  # every caller that handles a full queue
    held.release()
    budget.try_reserve(30 * MB, large=False).release()
    assert budget.used == 0 and budget.refused == 1 and budget.peak == 80 * MB


def test_large_images_leave_room_for_small_ones() -> None:
    budget = MemoryBudget(100 * MB, large_share=0.5)
    large = budget.try_reserve(40 * MB, large=True)
    with pytest.raises(OverBudget):
        budget.try_reserve(20 * MB, large=True)  # the large share (50 MB) is taken
    small = budget.try_reserve(55 * MB, large=False)  # small ones still fit
    assert budget.describe()["large_used_bytes"] == 40 * MB
    large.release()
    small.release()
    assert budget.describe()["used_bytes"] == 0


def test_an_image_bigger_than_the_whole_budget_is_too_large_not_busy() -> None:
    budget = MemoryBudget(100 * MB, large_share=0.5)
    with pytest.raises(ImageTooLarge, match="UNPAIRED_MEMORY_BUDGET_MB"):
        budget.try_reserve(60 * MB, large=True)
    with pytest.raises(ImageTooLarge):
        budget.reserve(101 * MB, large=False)


def test_memory_returns_when_every_holder_released_it() -> None:
    budget = MemoryBudget(100 * MB)
    reservation = budget.try_reserve(60 * MB, large=False)
    reservation.hold()  # the batcher's hold
    reservation.release()
    assert budget.used == 60 * MB  # the batcher still has the image
    reservation.release()
    reservation.release()  # a second release by the same holder changes nothing
    assert budget.used == 0


def test_bulk_work_waits_for_room_and_gives_up_when_told_to() -> None:
    budget = MemoryBudget(100 * MB)
    held = budget.try_reserve(90 * MB, large=False)
    got: list[object] = []
    looked = threading.Semaphore(0)  # released each time the waiter looks whether to stop

    def should_stop() -> bool:
        looked.release()
        return False

    waiter = threading.Thread(
        target=lambda: got.append(
            budget.reserve(50 * MB, large=False, should_stop=should_stop, poll_s=0.02)
        )
    )
    waiter.start()
    assert looked.acquire(timeout=60) and looked.acquire(timeout=60)  # it found no room, twice
    assert not got  # still waiting
    held.release()
    waiter.join(2)
    assert got and budget.used == 50 * MB
    with pytest.raises(WorkDropped, match="dropped"):
        budget.reserve(60 * MB, large=False, should_stop=lambda: True, poll_s=0.01)


def test_the_cost_of_a_tiled_image_grows_with_its_pixels_not_with_float_copies() -> None:
    def cost(side: int, tiled: bool) -> int:
        return working_bytes(
            side,
            side,
            padded=(side, side),
            tile=512 if tiled else None,
            tile_batch=2,
            widest_channels=16,
        )

    pixels = 8000 * 8000
    huge = cost(8000, tiled=True)
    # the images themselves plus a window of tiles: far below one float copy per pixel
    assert pixels * 16 < huge < pixels * 16 + 600 * MB
    assert huge < 1.5 * 2**30  # the 64 Mpx target on the demo model
    # an untiled image pays for its float copies and activations per pixel
    assert cost(1024, tiled=False) > 1024 * 1024 * (16 + 24 + 20 * 16) - 1
