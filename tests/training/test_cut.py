"""CUT and FastCUT: the PatchNCE loss by hand, the projection head, training that resumes
exactly, one-sided runs, export and translation; the generators' moving average (EMA)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from models.patch_sampler import PatchSampleMLP
from tests.cli.test_cli import unpaired
from tests.conftest import read_losses
from training import checkpoint as ckpt
from training.config import ConfigError
from training.cut import CutTrainer
from training.ddp import DistInfo
from training.evaluate import has_ema_weights, load_run_generators
from training.losses import patch_nce_loss
from training.runner import train

CUT_KEYS = ("AtoB/gan", "AtoB/nce", "BtoA/gan", "BtoA/nce", "D_X", "D_Y", "G/total")


def test_patch_nce_by_hand() -> None:
    """Two images of two patches; each query must pick its own key out of its image's keys."""
    s = 1 / math.sqrt(2)
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0], [s, s], [1.0, 0.0]])  # image 1: 0-1, 2: 2-3
    key = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [s, s]])
    t = 0.5

    def expected(positive: float, negative: float) -> float:
        """-log softmax of the positive among [positive, the other patch, the masked self]."""
        logits = [positive / t, negative / t, -10.0 / t]
        return -(logits[0] - math.log(sum(math.exp(v) for v in logits)))

    # patch 0: q.k0 = 1 (pos), q.k1 = 0 (neg); patch 1 alike; image 2: q2.k2 = s, q2.k3 = 1;
    # q3.k3 = s, q3.k2 = 0
    want = [expected(1, 0), expected(1, 0), expected(s, 1), expected(s, 0)]
    got = patch_nce_loss(query, key, batch_size=2, temperature=t)
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-5, rtol=1e-5)
    # negatives never cross images: the same patches as one image of four give other losses
    assert not torch.allclose(patch_nce_loss(query, key, batch_size=1, temperature=t), got)
    # and the keys carry no gradient
    q = query.clone().requires_grad_(True)
    k = key.clone().requires_grad_(True)
    patch_nce_loss(q, k, batch_size=2, temperature=t).sum().backward()
    assert q.grad is not None and k.grad is None


def test_the_head_samples_one_set_of_positions_for_query_and_key() -> None:
    torch.manual_seed(0)
    head = PatchSampleMLP([3, 8], units=16)
    maps = [torch.randn(2, 3, 6, 6), torch.randn(2, 8, 4, 4)]
    embeddings, positions = head(maps, 20, None)
    assert [e.shape for e in embeddings] == [(2 * 20, 16), (2 * 16, 16)]  # 16: all of 4x4
    # unit length, up to the reference's 1e-7 in the denominator (small next to N(0, 0.02) init)
    assert all(torch.allclose(e.norm(dim=1), torch.ones(len(e)), atol=1e-3) for e in embeddings)
    again, same = head(maps, 20, positions)
    assert all(torch.equal(a, b) for a, b in zip(positions, same, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(embeddings, again, strict=True))
    # patch i of the first map is the feature at position positions[0][i]
    flat = maps[0].permute(0, 2, 3, 1).flatten(1, 2)[0, positions[0][:1]]
    direct = head.mlps[0](flat)
    want = direct / (direct.norm(dim=1, keepdim=True) + 1e-7)
    torch.testing.assert_close(embeddings[0][:1], want)


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("cut", {}),
        ("fastcut", {}),
        ("cut", {"direction": "BtoA", "ema_decay": 0.9, "ema_start": 2}),
    ],
)
def test_training_resumes_exactly(tiny_config: Any, tmp_path: Path, model: str, extra: Any) -> None:
    whole = tiny_config(model=model, out=tmp_path / "whole", **extra)
    train(whole, progress=False)
    parted = tiny_config(model=model, out=tmp_path / "parted", **extra)
    train(parted, progress=False)
    shutil.rmtree(ckpt.checkpoint_dir(parted.out, 6))  # died after its step-3 checkpoint
    assert train(parted, resume=True, progress=False).step == 6
    expected, got = read_losses(whole.out), read_losses(parted.out)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    keys = [k for k in CUT_KEYS if k in expected[0]]
    assert len(keys) >= (7 if whole.direction == "both" else 4)
    for a, b in zip(expected, got, strict=True):
        for key in keys:
            assert b[key] == pytest.approx(a[key], abs=1e-5), (a["step"], key)
    final_a = load_file(str(ckpt.latest_checkpoint(whole.out) / ckpt.WEIGHTS_FILE))
    final_b = load_file(str(ckpt.latest_checkpoint(parted.out) / ckpt.WEIGHTS_FILE))
    assert final_a.keys() == final_b.keys()
    assert all(torch.allclose(final_a[k], final_b[k], atol=1e-6) for k in final_a)
    names = {k.split(".")[0] for k in final_a}
    if whole.direction == "both":
        assert names == {"G", "F", "D_X", "D_Y", "H_G", "H_F"}
        assert ("AtoB/nce_idt" in expected[0]) == (model == "cut")  # FastCUT has none
    else:
        assert names == {"F", "D_X", "H_F", "F_ema"}


def test_the_moving_average_follows_then_smooths(tiny_config: Any, tmp_path: Path) -> None:
    """Until ema_start it copies the weights; after, it lags them by the decay."""
    cfg = tiny_config(out=tmp_path / "run", ema_decay=0.5, ema_start=3, checkpoint_every=1,
                      keep_checkpoints=10)  # fmt: skip
    train(cfg, progress=False)
    weights = {s: load_file(str(ckpt.checkpoint_dir(cfg.out, s) / ckpt.WEIGHTS_FILE))
               for s in range(1, 7)}  # fmt: skip
    key = next(k for k in weights[1] if k.startswith("G.") and k.endswith("weight"))
    for step in (1, 2, 3):
        assert torch.equal(weights[step]["G_ema." + key[2:]], weights[step][key])
    for step in (4, 5, 6):  # ema = 0.5 ema + 0.5 weights
        blended = 0.5 * weights[step - 1]["G_ema." + key[2:]] + 0.5 * weights[step][key]
        torch.testing.assert_close(weights[step]["G_ema." + key[2:]], blended)
    assert not torch.equal(weights[6]["G_ema." + key[2:]], weights[6][key])
    _, _, averaged = load_run_generators(cfg.out, torch.device("cpu"))
    _, _, raw = load_run_generators(cfg.out, torch.device("cpu"), ema=False)
    state = averaged["AtoB"].state_dict()
    assert torch.equal(state[key[2:]], weights[6]["G_ema." + key[2:]])
    assert torch.equal(raw["AtoB"].state_dict()[key[2:]], weights[6][key])
    assert has_ema_weights(ckpt.latest_checkpoint(cfg.out))


def test_a_cut_run_exports_and_translates_with_its_average(tmp_path: Path) -> None:
    run, store = tmp_path / "run", tmp_path / "store"
    trained = unpaired("train", "--model", "fastcut", "--direction", "AtoB", "--dataset",
                       "day2night", "--max-steps", "3", "--out", run, "--size", "32",
                       "--generator", "resnet_6blocks", "--ngf", "4", "--ndf", "4",
                       "--batch-size", "2", "--threads", "1", "--no-progress",
                       "--set", "preprocess=none", "--set", "n_train=8",
                       "--set", "ema_decay=0.9", "--set", "ema_start=1")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    for name, flag in (("avg", "--ema"), ("raw", "--no-ema")):
        done = unpaired("export", run, "--name", name, "--store", store, "--no-tiled", flag)
        assert done.returncode == 0, done.stderr
    import json

    manifests = {n: json.loads((store / n / "manifest.json").read_text()) for n in ("avg", "raw")}
    assert list(manifests["avg"]["directions"]) == ["AtoB"]  # one-sided: one graph
    assert manifests["avg"]["training"]["weights"] == "ema"
    assert manifests["raw"]["training"]["weights"] == "raw"
    assert not any("H_G" in f or "D_Y" in f for f in manifests["avg"]["files"])
    photo = tmp_path / "in" / "photo.png"
    photo.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (36, 44, 3), np.uint8)).save(photo)
    outputs = {}
    for name in ("avg", "raw"):
        done = unpaired("translate", name, photo, "--direction", "AtoB", "--store", store,
                        "--out", tmp_path / name)  # fmt: skip
        assert done.returncode == 0, done.stderr
        outputs[name] = np.asarray(Image.open(tmp_path / name / "photo.png"))
        assert outputs[name].shape == (36, 44, 3)
    assert not np.array_equal(outputs["avg"], outputs["raw"])
    refused = unpaired("translate", "avg", photo, "--direction", "BtoA", "--store", store,
                       "--out", tmp_path / "no")  # fmt: skip
    assert refused.returncode != 0 and "BtoA" in refused.stderr


def test_what_cut_cannot_do_is_a_clear_error(tiny_config: Any) -> None:
    with pytest.raises(ConfigError, match="nce_layers"):
        train(tiny_config(model="cut", nce_layers=[0, 99]), progress=False)
    with pytest.raises(Exception, match="direction is for cut"):
        tiny_config(model="cyclegan", direction="AtoB")


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [{"amp": "bf16", "channels_last": True}, {"compile": True}],
    ids=["bf16-channels-last", "compile"],
)
def test_cut_trains_with_every_execution_option(tiny_config: Any, overrides: Any) -> None:
    cfg = tiny_config(model="cut", max_steps=2, **overrides)
    trainer = CutTrainer(cfg, torch.device("cpu"), DistInfo())
    before = {k: v.clone() for k, v in trainer.nets["G"].state_dict().items()}
    x = torch.rand(2, 3, cfg.size, cfg.size) * 2 - 1
    for _ in range(2):
        logs, visuals = trainer.train_step({"A": x, "B": x.flip(-1)})
    assert all(torch.isfinite(v) for v in logs.values())
    assert visuals["fake_y"].shape == x.shape
    after = trainer.nets["G"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_cut_runs_under_torchrun(tmp_path: Path) -> None:
    """Two CPU processes (gloo): generators, heads and discriminators kept in step."""
    import subprocess
    import sys

    run = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "cli", "train",
               "--model", "cut", "--dataset", "day2night", "--max-steps", "2", "--out", str(run),
               "--size", "32", "--generator", "resnet_6blocks", "--ngf", "4", "--ndf", "4",
               "--batch-size", "1", "--threads", "1", "--no-progress", "--set",
               "preprocess=none", "--set", "n_train=8", "--set", "log_every=1"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    weights = load_file(str(ckpt.checkpoint_dir(run, 2) / ckpt.WEIGHTS_FILE))
    assert {k.split(".")[0] for k in weights} == {"G", "F", "D_X", "D_Y", "H_G", "H_F"}
    assert [row["step"] for row in read_losses(run)] == [1, 2]
