"""Failpoints (service/failpoints.py): they act only where, on what and as often as armed."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from service import failpoints
from service.settings import Failpoint, load_settings
from service.settings import SettingsError as BadSettings
from tests.waiting import wait_until


@pytest.fixture(autouse=True)
def _disarmed() -> Iterator[None]:
    yield
    failpoints.disarm()


class StorageHiccup(RuntimeError):
    pass


def test_nothing_happens_unless_armed() -> None:
    failpoints.hit("chunk", "job/0", error=StorageHiccup)


def test_an_error_acts_on_matching_names_after_and_times_as_armed() -> None:
    failpoints.arm([Failpoint(at="chunk", do="error", match="/3", after=1, times=2)])
    outcomes = []
    for name in ("j/3", "j/2", "j/3", "j/3", "j/3", "j/3"):
        try:
            failpoints.hit("chunk", name, error=StorageHiccup)
            outcomes.append("ran")
        except StorageHiccup as exc:
            assert "injected" in str(exc)
            outcomes.append("failed")
    # the first match passes (after=1), the next two fail (times=2), then it runs again
    assert outcomes == ["ran", "ran", "failed", "failed", "ran", "ran"]
    failpoints.hit("decode", "j/3")  # another place: untouched


def test_a_wait_says_it_arrived_and_holds_until_its_gate_exists(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    failpoints.arm([Failpoint(at="batch", do="wait", path=str(gate))])
    passed = threading.Event()
    holder = threading.Thread(target=lambda: (failpoints.hit("batch", "m"), passed.set()))
    holder.start()
    reached = Path(f"{gate}.reached")
    wait_until(reached.exists, "the failpoint was reached")
    assert not passed.is_set()  # held: the gate does not exist
    gate.touch()
    assert passed.wait(30)
    holder.join(30)
    assert "batch" in reached.read_text()


def test_disarming_returns_to_nothing() -> None:
    disarm = failpoints.arm([Failpoint(at="decode", do="error")])
    with pytest.raises(failpoints.FailpointError):
        failpoints.hit("decode", "x")
    disarm()
    failpoints.hit("decode", "x")


def test_a_crash_kills_the_process_like_a_segfault() -> None:
    script = (
        "from service import failpoints\n"
        "from service.settings import Failpoint\n"
        "failpoints.arm([Failpoint(at='decode', do='crash', match='poison')])\n"
        "failpoints.hit('decode', 'fine.png')\n"
        "print('survived a good one', flush=True)\n"
        "failpoints.hit('decode', 'poison.png')\n"
        "print('survived the poison', flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    assert done.stdout == "survived a good one\n"


def test_failpoints_come_from_the_environment_and_bad_ones_are_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UNPAIRED_FAILPOINTS", '[{"at": "chunk", "do": "error", "times": 2}]')
    assert load_settings().failpoints == (Failpoint(at="chunk", do="error", times=2),)
    monkeypatch.setenv("UNPAIRED_FAILPOINTS", '[{"at": "chunk", "do": "wait"}]')
    with pytest.raises(BadSettings, match=r"UNPAIRED_FAILPOINTS.*needs the `path`"):
        load_settings()
    monkeypatch.setenv("UNPAIRED_FAILPOINTS", '[{"at": "nowhere", "do": "error"}]')
    with pytest.raises(BadSettings, match="UNPAIRED_FAILPOINTS"):
        load_settings()
