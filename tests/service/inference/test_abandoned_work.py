"""Work nobody waits for is dropped even when its caller left while the image was still
decoding (a hang-up during the upload's decode, a job cancelled while its member decodes):
its queued item is cancelled and its memory given back, instead of running to the end."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.errors import WorkDropped
from service.inference.requests import OutputSpec, TranslationRequest
from tests.service.api.conftest import png
from tests.service.inference.conftest import HeldDecode, tiny_translator


@pytest.fixture
def translator(model_store: Path) -> Iterator[HeldDecode]:
    # the item waits in the queue long enough to be seen cancelled
    slow = tiny_translator(HeldDecode, model_store, max_wait=2.0)
    yield slow
    slow.may_finish.set()
    slow.close_blocking()


def _request() -> TranslationRequest:
    return TranslationRequest(
        model="tiny",
        direction="AtoB",
        data=png(),
        output=OutputSpec(format="png"),
        deadline=math.inf,
        name="a.png",
    )


def _until(condition: Callable[[], bool], timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_caller_cancelled_while_decoding_leaves_no_work_behind(
    translator: HeldDecode,
) -> None:
    async def hang_up() -> None:
        task = asyncio.ensure_future(translator.translate(_request()))
        await asyncio.get_running_loop().run_in_executor(None, translator.decoding.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(hang_up())
    translator.may_finish.set()  # the decode ends after the caller left
    assert _until(lambda: bool(translator.queued))
    assert _until(lambda: translator.queued[0].cancelled())
    assert _until(lambda: translator.budget.used == 0)


def test_a_bulk_chunk_stopped_while_an_image_decodes_drops_that_image(
    translator: HeldDecode,
) -> None:
    stop = threading.Event()
    results: list[Any] = []
    runner = threading.Thread(
        target=lambda: results.extend(
            translator.translate_background([_request()], should_stop=stop.is_set)
        )
    )
    runner.start()
    assert translator.decoding.wait(5)
    stop.set()  # the job is cancelled while its image still decodes
    time.sleep(0.7)  # the chunk notices (it asks every half second)
    translator.may_finish.set()
    runner.join(10)
    assert not runner.is_alive()
    assert translator.queued and translator.queued[0].cancelled()
    assert len(results) == 1 and isinstance(results[0], WorkDropped)  # not a failure
    assert _until(lambda: translator.budget.used == 0)
