"""Bulk work inside a serving process never holds back an interactive request: not in the
micro-batcher (tests/service/inference/test_batcher.py), not on the decode/encode threads, not
for the CPU (bulk-only threads run at a higher niceness)."""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.inference.priorities import BULK_NICENESS, lower_thread_priority
from service.inference.requests import OutputSpec, Translated, TranslationRequest
from tests.service.api.conftest import png
from tests.service.inference.conftest import HeldDecode, tiny_translator


class HeldBulk(HeldDecode):
    """Bulk decoding waits until the test lets it go on; interactive decoding does not."""

    bulk_only = True


@pytest.fixture
def translator(model_store: Path) -> Iterator[HeldBulk]:
    held = tiny_translator(
        HeldBulk,
        model_store,
        max_wait=0.001,
        background_batch=1,
        codec_threads=1,  # one thread: bulk work on it would hold the interactive request
    )
    yield held
    held.may_finish.set()
    held.close_blocking()


def request(offset: int) -> TranslationRequest:
    return TranslationRequest(
        model="tiny",
        direction="AtoB",
        data=png(offset=offset),
        output=OutputSpec(format="png"),
        deadline=math.inf,
        name=f"{offset}.png",
    )


def test_an_interactive_request_is_answered_while_a_bulk_chunk_waits(
    translator: HeldBulk,
) -> None:
    chunk = [request(offset) for offset in range(24)]
    bulk: list[Translated | Exception] = []
    runner = threading.Thread(target=lambda: bulk.extend(translator.translate_background(chunk)))
    runner.start()
    assert translator.decoding.wait(30)

    answer = asyncio.run(asyncio.wait_for(translator.translate(request(100)), timeout=30))

    assert answer.data.startswith(b"\x89PNG") and answer.batch_size == 1
    assert runner.is_alive() and not bulk  # the bulk chunk is still being decoded
    translator.may_finish.set()
    runner.join(60)
    assert len(bulk) == len(chunk)
    assert all(isinstance(result, Translated) for result in bulk), bulk


def test_a_bad_image_in_a_bulk_chunk_fails_only_itself(translator: HeldBulk) -> None:
    translator.may_finish.set()
    broken = TranslationRequest(
        model="tiny",
        direction="AtoB",
        data=b"not an image",
        output=OutputSpec(format="png"),
        deadline=math.inf,
        name="broken.png",
    )
    results = translator.translate_background([request(0), broken, request(1)])
    assert isinstance(results[0], Translated) and isinstance(results[2], Translated)
    assert isinstance(results[1], Exception) and "broken.png" in str(results[1])


def test_bulk_threads_run_at_a_lower_priority(translator: HeldBulk) -> None:
    translator.may_finish.set()
    translator.translate_background([request(0), request(1)])
    asyncio.run(translator.translate(request(2)))
    by_name = {thread.name: thread for thread in threading.enumerate()}
    bulk = [t for name, t in by_name.items() if name.startswith("bulk-codec")]
    interactive = [t for name, t in by_name.items() if name.startswith("codec")]
    assert bulk and interactive

    def niceness(thread: threading.Thread) -> int:
        assert thread.native_id is not None
        return os.getpriority(os.PRIO_PROCESS, thread.native_id)

    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert {niceness(t) for t in bulk} == {min(19, base + BULK_NICENESS)}
    assert {niceness(t) for t in interactive} == {base}


def test_lowering_a_threads_priority_leaves_the_others_alone() -> None:
    seen: list[int] = []

    def bulk_only() -> None:
        lower_thread_priority()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    base = os.getpriority(os.PRIO_PROCESS, 0)
    thread = threading.Thread(target=bulk_only)
    thread.start()
    thread.join()
    assert seen == [min(19, base + BULK_NICENESS)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
