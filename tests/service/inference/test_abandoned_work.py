"""Work nobody waits for is dropped even when its caller left while the image was still
decoding (a hang-up during the upload's decode, a job cancelled while its member decodes):
its queued item is cancelled and its memory given back, instead of running to the end."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.errors import WorkDropped
from service.inference.requests import OutputSpec, TranslationRequest
from tests.service.api.conftest import png
from tests.service.inference.conftest import HeldDecode, tiny_translator
from tests.waiting import wait_until


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
    wait_until(lambda: translator.queued, "the decoded image was queued")
    wait_until(lambda: translator.queued[0].cancelled(), "its queued work was cancelled")
    wait_until(lambda: translator.budget.used == 0, "its memory was returned")


def test_a_bulk_chunk_stopped_while_an_image_decodes_drops_that_image(
    translator: HeldDecode,
) -> None:
    stop = threading.Event()
    noticed = threading.Event()  # the chunk asked whether to stop after the job was cancelled

    def should_stop() -> bool:
        if stop.is_set():
            noticed.set()
        return stop.is_set()

    results: list[Any] = []
    runner = threading.Thread(
        target=lambda: results.extend(
            translator.translate_background([_request()], should_stop=should_stop)
        )
    )
    runner.start()
    assert translator.decoding.wait(60)
    stop.set()  # the job is cancelled while its image still decodes
    assert noticed.wait(60)
    translator.may_finish.set()
    runner.join(10)
    assert not runner.is_alive()
    assert translator.queued and translator.queued[0].cancelled()
    assert len(results) == 1 and isinstance(results[0], WorkDropped)  # not a failure
    wait_until(lambda: translator.budget.used == 0, "its memory was returned")
