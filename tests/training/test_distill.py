"""`unpaired distill`: a tiny teacher distilled a few steps, exported, served; resume, Ctrl-C."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from models.complexity import architecture_complexity
from models.manifest import Architecture, parse_manifest
from tests.cli.test_cli import TINY_FLAGS, assert_user_error, logged_steps, read_losses, unpaired
from tests.service.jobs_http import outputs, wait_for_job
from tests.service.servers import running_server, service_env
from tests.waiting import wait_until
from training.distill import CACHE_DIR, fidelity
from training.evaluate import load_run_generators

STUDENT = ["--student", "mobile_resnet_2blocks", "--ngf", "4", "--batch-size", "2",
           "--threads", "1", "--no-progress", "--set", "n_train=8", "--set", "distill_holdout=4",
           "--set", "log_every=1"]  # fmt: skip


ALL_TERMS = ["--set", "lambda_feature=1", "--set", "lambda_gan=0.1"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CycleGAN run on day2night (ResNet-6, ngf 4, 32x32), two steps."""
    run = tmp_path_factory.mktemp("teacher") / "run"
    trained = unpaired("train", "--dataset", "day2night", "--max-steps", "2", "--out", run,
                       *TINY_FLAGS)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    return run


def test_distil_export_and_serve_with_fidelity_and_macs(teacher: Path, tmp_path: Path) -> None:
    run, store = tmp_path / "student", tmp_path / "store"
    distilled = unpaired("distill", teacher, "--out", run, "--max-steps", "3", *STUDENT)
    assert distilled.returncode == 0, distilled.stderr
    assert "distilling run into mobile_resnet_2blocks (ngf 4) on day2night" in distilled.stderr
    info = json.loads((run / CACHE_DIR / "teacher.json").read_text())
    # every training image and its mirror image, each with the teacher's own output
    assert info["images"] == {"train/AtoB": 16, "train/BtoA": 16, "test/AtoB": 4, "test/BtoA": 4}
    exported = unpaired("export", run, "--name", "student", "--store", store, "--no-tiled")
    assert exported.returncode == 0, exported.stderr

    manifest = parse_manifest((store / "student" / "manifest.json").read_text(), source="test")
    distillation = manifest.distillation
    assert distillation is not None and distillation.teacher["kind"] == "run"
    student = Architecture(generator="mobile_resnet_2blocks", ngf=4, norm="instance")
    assert distillation.student == student
    assert distillation.macs == architecture_complexity(student).macs
    teacher_arch = Architecture(generator="resnet_6blocks", ngf=4, norm="instance")
    assert distillation.teacher_macs == architecture_complexity(teacher_arch).macs
    _, _, nets = load_run_generators(run, torch.device("cpu"))
    measured = fidelity(run, nets, "mobile_resnet_2blocks")
    for direction in ("AtoB", "BtoA"):
        recorded = distillation.fidelity[direction]
        assert recorded.images == 4
        assert recorded.psnr_db == pytest.approx(measured[direction]["psnr_db"], abs=1e-3)
        assert recorded.identity_psnr_db == pytest.approx(
            measured[direction]["identity_psnr_db"], abs=1e-3
        )

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), np.uint8)).save(photo)
    with running_server(service_env(store), tmp_path / "server.log") as server:
        answer = httpx.post(
            f"{server.url}/v1/models/student/translate?direction=AtoB",
            content=photo.read_bytes(),
            headers={"content-type": "image/png"},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        described = httpx.get(f"{server.url}/v1/models/student", timeout=10).json()
        assert described["distillation"]["macs"] == distillation.macs
        job = httpx.post(
            f"{server.url}/v1/jobs",
            data={"model": "student", "direction": "AtoB"},
            files={"files": ("photo.png", photo.read_bytes(), "image/png")},
            timeout=30,
        )
        assert job.status_code == 202, job.text
        assert wait_for_job(server.url, job.json()["id"], timeout=120)["state"] == "succeeded"
        (served,) = outputs(server.url, job.json()["id"]).values()
        assert served == answer.content


def test_resume_continues_exactly_and_ctrl_c_saves(teacher: Path, tmp_path: Path) -> None:
    """With every term on: feature adapters and the teacher's discriminators resume too."""
    straight = tmp_path / "straight"
    steps = ["--max-steps", "4", "--checkpoint-every", "2", *ALL_TERMS]
    done = unpaired("distill", teacher, "--out", straight, *steps, *STUDENT)
    assert done.returncode == 0, done.stderr
    logged = read_losses(straight)[-1]
    assert {"AtoB/feature", "BtoA/feature", "AtoB/gan", "BtoA/D", "BtoA/ssim"} <= logged.keys()
    # the same run, stopped after its step-2 checkpoint and resumed: the same weights at step 4
    again = tmp_path / "again"
    shutil.copytree(straight, again)
    shutil.rmtree(again / "checkpoints" / "step_00000004")
    resumed = unpaired("distill", teacher, "--out", again, *steps, "--resume", *STUDENT)
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(straight / "checkpoints" / "step_00000004" / "weights.safetensors")
    b = load_file(again / "checkpoints" / "step_00000004" / "weights.safetensors")
    assert a.keys() == b.keys()
    assert {key.split(".")[0] for key in a} == {"G", "F", "adapters_AtoB", "adapters_BtoA",
                                                "D_X", "D_Y"}  # fmt: skip

    def losses(run: Path) -> list[dict[str, float]]:
        return [{k: v for k, v in row.items() if k != "img_per_s"} for row in read_losses(run)]

    assert losses(again) == losses(straight)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)

    stopped = tmp_path / "stopped"
    command = [sys.executable, "-m", "cli", "distill", str(teacher), "--out", str(stopped),
               "--max-steps", "500", "--checkpoint-every", "2", *STUDENT]  # fmt: skip
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: logged_steps(stopped, proc) >= 2, "two steps logged", timeout=120)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert f"Continue with: unpaired distill {teacher} --out {stopped} --resume" in stderr
    step = read_losses(stopped)[-1]["step"]
    assert step < 500
    assert (stopped / "checkpoints" / f"step_{step:08d}" / "weights.safetensors").is_file()


def test_a_teacher_that_is_neither_a_run_nor_a_model_is_a_clear_error(tmp_path: Path) -> None:
    result = unpaired("distill", "nothing-here", "--out", tmp_path / "s", "--store", tmp_path,
                      "--dataset", "day2night", *STUDENT)  # fmt: skip
    assert_user_error(result, "nothing-here")
    assert not (tmp_path / "s").exists()


@pytest.fixture(scope="module")
def teacher_store(teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The teacher run exported by the CLI as store model `teacher`; returns the store."""
    store = tmp_path_factory.mktemp("teacher-store") / "store"
    published = unpaired("export", teacher, "--name", "teacher", "--store", store, "--no-tiled")
    assert published.returncode == 0, published.stderr
    return store


def test_a_student_starts_as_its_teachers_copy(teacher_store: Path, tmp_path: Path) -> None:
    """A store model with weights teaches like a run: pruned start and feature matching. A
    student of the teacher's own shape starts as the teacher, so one step with a vanishing
    learning rate already reproduces it; from noise it does not."""
    store = teacher_store
    same_shape = ["--student", "resnet_6blocks", "--ngf", "4", "--max-steps", "1",
                  "--set", "lr=1e-12", "--set", "lambda_feature=1"]  # fmt: skip
    scores = {}
    for start in ("teacher", "random"):
        run = tmp_path / start
        done = unpaired("distill", "teacher", "--store", store, "--out", run, *STUDENT,
                        *same_shape, "--set", f"distill_init={start}")  # fmt: skip
        assert done.returncode == 0, done.stderr
        _, _, nets = load_run_generators(run, torch.device("cpu"))
        scores[start] = fidelity(run, nets, "resnet_6blocks")
    for direction in ("AtoB", "BtoA"):
        assert scores["teacher"][direction]["psnr_db"] > 45  # the teacher's own outputs
        assert scores["random"][direction]["psnr_db"] < scores["teacher"][direction]["psnr_db"] - 10


def test_a_teacher_that_translates_one_way_teaches_that_way(
    teacher_store: Path, tmp_path: Path
) -> None:
    """vintagify's generator maps modern to vintage only: its student learns AtoB alone."""
    from tests.conftest import edited_copy

    store = tmp_path / "store"
    shutil.copytree(teacher_store, store)
    manifest = json.loads((store / "teacher" / "manifest.json").read_text())
    edited_copy(store / "teacher", store / "oneway",
                directions={"AtoB": manifest["directions"]["AtoB"]})  # fmt: skip
    run = tmp_path / "student"
    done = unpaired("distill", "oneway", "--store", store, "--out", run, "--max-steps", "2",
                    *STUDENT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    info = json.loads((run / CACHE_DIR / "teacher.json").read_text())
    assert info["images"] == {"train/AtoB": 16, "test/AtoB": 4}
    exported = unpaired("export", run, "--name", "s", "--store", store, "--no-tiled")
    assert exported.returncode == 0, exported.stderr
    student = parse_manifest((store / "s" / "manifest.json").read_text(), source="test")
    assert set(student.directions) == {"AtoB"}
    assert student.distillation is not None and set(student.distillation.fidelity) == {"AtoB"}


def test_what_a_teacher_cannot_give_is_a_clear_error(teacher_store: Path, tmp_path: Path) -> None:
    store = teacher_store
    # a store model has no discriminators to play against
    result = unpaired("distill", "teacher", "--store", store, "--out", tmp_path / "s",
                      "--set", "lambda_gan=1", *STUDENT)  # fmt: skip
    assert_user_error(result, "lambda_gan needs a training run as teacher")
    # a U-Net teacher cannot be pruned into a ResNet student
    unet = tmp_path / "unet"
    trained = unpaired("train", "--dataset", "day2night", "--max-steps", "1", "--out", unet,
                       *TINY_FLAGS, "--set", "generator=unet_32")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    result = unpaired("distill", unet, "--out", tmp_path / "u", "--set", "distill_init=teacher",
                      *STUDENT)  # fmt: skip
    assert_user_error(result, "ResNet")


@pytest.mark.slow
def test_distillation_runs_under_torchrun(teacher: Path, tmp_path: Path) -> None:
    """Two CPU processes (gloo): one teacher cache, students and adapters kept in step."""
    run = tmp_path / "ddp"
    command = ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "cli", "distill",
               str(teacher), "--out", str(run), "--max-steps", "2", *STUDENT,
               "--set", "lambda_feature=1"]  # fmt: skip
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [str(torchrun), *command[1:]], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((run / CACHE_DIR / "teacher.json").read_text())["images"]["train/AtoB"] == 16
    weights = load_file(run / "checkpoints" / "step_00000002" / "weights.safetensors")
    assert any(key.startswith("adapters_AtoB.") for key in weights)
    assert [row["step"] for row in read_losses(run)] == [1, 2]
