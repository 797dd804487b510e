"""The `unpaired` command as a user runs it: real subprocesses, exit codes, stdout vs stderr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import read_losses
from tests.waiting import wait_until

TINY_FLAGS = [
    "--size", "32", "--generator", "resnet_6blocks", "--ngf", "4", "--ndf", "4",
    "--batch-size", "2", "--threads", "1", "--no-progress",
    "--set", "preprocess=none", "--set", "log_every=1", "--set", "n_train=16",
]  # fmt: skip


def unpaired(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_user_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_commands_in_the_order_of_the_work_one_line_each() -> None:
    """A newcomer reads `unpaired --help` top to bottom: make data, train, ..., serve."""
    result = subprocess.run(
        [sys.executable, "-m", "cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "80", "TERM": "dumb"},
    )
    assert result.returncode == 0, result.stderr
    panel = result.stdout.split("Commands")[1]
    rows = [line.strip("│ ").split(maxsplit=1) for line in panel.splitlines() if "│" in line]
    assert [row[0] for row in rows] == [
        "datasets", "train", "evaluate", "distill", "export", "models",
        "translate", "serve", "worker", "jobs", "settings",
    ]  # fmt: skip
    for name, summary in rows:  # a continuation row would start with a word of a summary
        assert summary.endswith("."), f"{name}: {summary!r} is cut"


def test_datasets_list_json() -> None:
    result = unpaired("datasets", "list", "--json")
    assert result.returncode == 0
    names = {d["name"] for d in json.loads(result.stdout)["datasets"]}
    assert {"day2night", "solid2stripes", "flat2relief"} <= names


def test_make_train_evaluate_on_a_folder(tmp_path: Path) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    made = unpaired("datasets", "make", "solid2stripes", "--out", data, "--size", "32",
                    "--n-train", "6", "--n-test", "3")  # fmt: skip
    assert made.returncode == 0, made.stderr
    trained = unpaired("train", "--dataroot", data, "--max-steps", "2", "--out", run, *TINY_FLAGS)
    assert trained.returncode == 0, trained.stderr
    evaluated = unpaired("evaluate", run, "--dataroot", data, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)  # exactly one JSON object on stdout
    assert set(report["directions"]) == {"AtoB", "BtoA"}
    for d in report["directions"].values():
        assert d["n"] == 3 and d["baseline_psnr"] < 20
        assert d["gain_db"] == pytest.approx(d["psnr"] - d["baseline_psnr"], abs=1e-3)
    table = unpaired("evaluate", run, "--dataroot", data)
    assert table.returncode == 0 and "AtoB" in table.stderr and table.stdout == ""


def test_bad_input_gets_a_clear_message(tmp_path: Path) -> None:
    assert_user_error(
        unpaired("train", "--dataroot", tmp_path / "nowhere", "--max-steps", "1", *TINY_FLAGS),
        "does not exist",
    )
    (tmp_path / "empty" / "trainA").mkdir(parents=True)
    (tmp_path / "empty" / "trainB").mkdir(parents=True)
    assert_user_error(
        unpaired("train", "--dataroot", tmp_path / "empty", "--max-steps", "1", *TINY_FLAGS),
        "no image",
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: day2night\nlearnig_rate: 0.1\n")
    assert_user_error(unpaired("train", "--config", bad), "unknown option 'learnig_rate'")
    assert_user_error(unpaired("train", "--dataset", "day2night", "--model", "pix2pix"), "model")
    assert_user_error(
        unpaired("train", "--dataset", "nope", "--max-steps", "1", *TINY_FLAGS), "nope"
    )
    assert_user_error(unpaired("evaluate", tmp_path, "--dataset", "day2night"), "no checkpoint")


def test_all_unreadable_images_is_an_error_and_some_is_a_warning(tmp_path: Path) -> None:
    for domain in ("trainA", "trainB"):
        (tmp_path / domain).mkdir()
        (tmp_path / domain / "broken.png").write_bytes(b"not an image")
    assert_user_error(
        unpaired("train", "--dataroot", tmp_path, "--max-steps", "1", *TINY_FLAGS), "trainA"
    )
    for domain in ("trainA", "trainB"):
        Image.new("RGB", (40, 36), "red").save(tmp_path / domain / "ok.png")
    result = unpaired(
        "train", "--dataroot", tmp_path, "--max-steps", "1", "--out", tmp_path / "run", *TINY_FLAGS
    )
    assert result.returncode == 0, result.stderr
    assert "broken.png" in result.stderr


def test_resume_with_another_architecture_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = unpaired(
        "train", "--dataset", "day2night", "--max-steps", "1", "--out", run, *TINY_FLAGS
    )
    assert first.returncode == 0, first.stderr
    assert_user_error(unpaired("train", "--resume", run, "--ngf", "8"), "ngf: run has 4")
    more = unpaired("train", "--resume", run, "--max-steps", "2", "--no-progress")
    assert more.returncode == 0, more.stderr
    assert [r["step"] for r in read_losses(run)] == [1, 2]


def logged_steps(run: Path, proc: subprocess.Popen[str]) -> int:
    """Steps the running training `proc` has logged in `run` (it must still be running)."""
    assert proc.poll() is None, f"training exited early: {proc.communicate()[1]}"
    return len(read_losses(run)) if (run / "losses.jsonl").exists() else 0


def test_ctrl_c_writes_a_checkpoint_that_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "train", "--dataset", "day2night", "--max-steps", "500",
         "--out", str(run), *TINY_FLAGS],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_until(lambda: logged_steps(run, proc) >= 2, "two steps logged", timeout=120)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Continue with: unpaired train --resume" in stderr
    stopped = read_losses(run)[-1]["step"]
    assert stopped < 500
    assert (run / "checkpoints" / f"step_{stopped:08d}" / "weights.safetensors").is_file()
    resumed = unpaired("train", "--resume", run, "--max-steps", str(stopped + 1), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert read_losses(run)[-1]["step"] == stopped + 1


def test_resume_or_start_starts_then_a_retry_continues_from_the_checkpoint(
    tmp_path: Path,
) -> None:
    """What a retried Kubernetes Job does: the same command again, after a SIGTERM."""
    run = tmp_path / "run"
    run.mkdir()  # an empty folder (a fresh volume) is a start, like a missing one
    command = [sys.executable, "-m", "cli", "train", "--resume-or-start", "--dataset",
               "day2night", "--max-steps", "60", "--out", str(run), *TINY_FLAGS]  # fmt: skip
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: logged_steps(run, proc) >= 2, "two steps logged", timeout=120)
    proc.send_signal(signal.SIGTERM)  # what the kubelet sends a pod that is preempted
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "training cyclegan" in stderr and "Continue with: the same command" in stderr
    stopped = read_losses(run)[-1]["step"]
    assert 2 <= stopped < 60
    logged = (run / "losses.jsonl").read_text().splitlines()
    # a pod killed while writing its next checkpoint leaves a .tmp folder: not a checkpoint
    partial = run / "checkpoints" / f"step_{stopped + 1:08d}.tmp"
    partial.mkdir()
    (partial / "state.json").write_text(json.dumps({"step": stopped + 1}))

    retried = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert retried.returncode == 0, retried.stderr
    assert "holds a checkpoint: continuing that run" in retried.stderr
    assert "resuming cyclegan" in retried.stderr
    lines = (run / "losses.jsonl").read_text().splitlines()
    # the first steps were not trained again (a restart would log them anew, other img/s)
    assert lines[: len(logged)] == logged
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 61))
    assert (run / "checkpoints" / "step_00000060" / "weights.safetensors").is_file()
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr  # done already: nothing left to train
    assert "done: step 60" in again.stderr
    assert (run / "losses.jsonl").read_text().splitlines() == lines


def test_resume_or_start_refuses_a_checkpoint_of_another_configuration(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = unpaired(
        "train", "--dataset", "day2night", "--max-steps", "1", "--out", run, *TINY_FLAGS
    )
    assert first.returncode == 0, first.stderr
    before = (run / "losses.jsonl").read_text()
    other: list[str | Path] = [
        "--dataset",
        "day2night",
        "--max-steps",
        "2",
        "--out",
        run,
        *TINY_FLAGS,
    ]
    assert_user_error(
        unpaired("train", "--resume-or-start", *other, "--ngf", "8"),
        "ngf: run has 4, asked for 8",
    )
    assert_user_error(
        unpaired("train", "--resume-or-start", *other, "--set", "lambda_cycle=5"),
        "lambda_cycle: run has 10.0, asked for 5",
    )
    assert (run / "losses.jsonl").read_text() == before  # refused before anything was written
    assert_user_error(unpaired("train", "--resume-or-start", "--resume", run), "exclude each other")
    # what a resume may change, it may: a longer run
    longer = unpaired("train", "--resume-or-start", *other)
    assert longer.returncode == 0, longer.stderr
    assert [r["step"] for r in read_losses(run)] == [1, 2]


@pytest.mark.slow
@pytest.mark.skipif(os.cpu_count() is None, reason="needs a CPU count")
def test_torchrun_ddp_on_cpu_then_resume_in_one_process(tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    torchrun = Path(sys.executable).parent / "torchrun"
    # as the training Job runs it (deploy/k8s/training/job.yaml): every rank decides by itself
    # whether to resume, and the ranks check that they agree on the step they start from
    launch = [
        str(torchrun), "--nproc-per-node", "2", "--standalone", "-m", "cli", "train",
        "--resume-or-start", "--dataset", "day2night", "--out", str(run), *TINY_FLAGS,
    ]  # fmt: skip
    result = subprocess.run(
        [*launch, "--max-steps", "3"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["step"] for r in read_losses(run)] == [1, 2, 3]
    retried = subprocess.run(
        [*launch, "--max-steps", "4"], capture_output=True, text=True, timeout=300
    )
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert "resuming" in retried.stderr
    assert [r["step"] for r in read_losses(run)] == [1, 2, 3, 4]
    resumed = unpaired("train", "--resume", run, "--max-steps", "5", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["step"] for r in read_losses(run)] == [1, 2, 3, 4, 5]
