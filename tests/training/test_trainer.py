"""The training loop on tiny configs: it learns something, resumes exactly, and refuses to mix
incompatible runs."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import read_losses
from training import checkpoint as ckpt
from training.optimisation import linear_decay
from training.runner import train
from training.trainer import Trainer

LOSS_KEYS = ("G/gan", "F/gan", "cycle/X", "cycle/Y", "identity", "D_X", "D_Y")


def test_a_run_writes_checkpoints_logs_and_samples(tiny_config) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_config(keep_checkpoints=2)
    result = train(cfg, progress=False)
    assert result.step == 6
    steps = [int(p.name.split("_")[1]) for p in ckpt.list_checkpoints(cfg.out)]
    assert steps == [3, 6]
    files = sorted(p.name for p in result.checkpoint.iterdir())  # type: ignore[union-attr]
    assert files == ["config.yaml", "state.json", "state.safetensors", "weights.safetensors"]
    weights = load_file(str(result.checkpoint / "weights.safetensors"))  # type: ignore[operator]
    assert {k.split(".")[0] for k in weights} == {"G", "F", "D_X", "D_Y"}
    assert not any("module." in k or "_orig_mod" in k for k in weights)
    losses = read_losses(cfg.out)
    assert [r["step"] for r in losses] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(r[k]) for r in losses for k in LOSS_KEYS)
    assert list((cfg.out / "tb").glob("events.out.tfevents.*"))
    assert (cfg.out / "config.yaml").is_file()


def test_a_run_out_of_minutes_logs_its_last_window_and_checkpoints_it(tiny_config) -> None:  # type: ignore[no-untyped-def]
    """A time budget spent between log intervals still leaves the run's rate and losses (the
    quality benchmark reads its seconds per step from them)."""
    cfg = tiny_config(max_steps=1000, log_every=500, checkpoint_every=500, max_minutes=1e-6)
    result = train(cfg, progress=False)
    assert result.step < 500
    losses = read_losses(cfg.out)
    assert [r["step"] for r in losses] == [result.step]
    assert losses[0]["img_per_s"] > 0
    assert ckpt.latest_checkpoint(cfg.out).name == ckpt.checkpoint_dir(cfg.out, result.step).name


def test_interrupted_then_resumed_run_reproduces_the_uninterrupted_one(
    tiny_config, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    whole = tiny_config(out=tmp_path / "whole", dropout=True)
    train(whole, progress=False)
    expected = read_losses(whole.out)

    parted = tiny_config(out=tmp_path / "parted", dropout=True)
    train(parted, progress=False)
    # Pretend the run died right after its step-3 checkpoint.
    shutil.rmtree(ckpt.checkpoint_dir(parted.out, 6))
    resumed = train(parted, resume=True, progress=False)
    assert resumed.step == 6
    got = read_losses(parted.out)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(expected, got, strict=True):
        for key in LOSS_KEYS:
            assert b[key] == pytest.approx(a[key], abs=1e-5), (a["step"], key)
    final_a = load_file(str(ckpt.latest_checkpoint(whole.out) / "weights.safetensors"))
    final_b = load_file(str(ckpt.latest_checkpoint(parted.out) / "weights.safetensors"))
    assert all(torch.allclose(final_a[k], final_b[k], atol=1e-6) for k in final_a)


def test_resume_into_a_different_architecture_is_refused(tiny_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_config(max_steps=3)
    train(cfg, progress=False)
    wider = tiny_config(max_steps=3, ngf=8)
    with pytest.raises(ckpt.CheckpointError, match="does not fit network G"):
        train(wider, resume=True, progress=False)
    with pytest.raises(ckpt.CheckpointError, match="already holds a run"):
        train(cfg, progress=False)  # a fresh start must not overwrite a run
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        train(tiny_config(out=tmp_path / "empty"), resume=True, progress=False)


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": "discogan", "size": 64},
        {"gan_mode": "wgangp", "discriminator": "pixel"},
        {"gan_mode": "hinge", "discriminator": "n_layers", "n_layers_d": 2},
        {"gan_mode": "vanilla", "norm": "batch", "generator": "unet_128", "size": 128},
        {"amp": "bf16", "channels_last": True},
    ],
    ids=["discogan", "wgangp", "hinge", "unet-batchnorm", "bf16-channels-last"],
)
def test_every_objective_and_architecture_trains(tiny_config, overrides) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_config(max_steps=2, batch_size=2, **overrides)
    trainer = Trainer(cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in trainer.nets.G.state_dict().items()}
    x = torch.rand(2, 3, cfg.size, cfg.size) * 2 - 1
    for _ in range(2):
        logs, visuals = trainer.step(x, x.flip(-1))
    assert all(torch.isfinite(v) for v in logs.values())
    assert visuals["fake_y"].shape == x.shape
    after = trainer.nets.G.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_discogan_uses_reconstruction_without_identity(tiny_config) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_config(model="discogan", size=64)
    trainer = Trainer(cfg, torch.device("cpu"))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    logs, _ = trainer.step(x, x)
    assert "identity" not in logs and trainer.opt_G.defaults["weight_decay"] == 1e-5
    # the paper's 4-layer discriminator: one logit per 64x64 image
    assert trainer.nets.D_X(torch.rand(1, 3, 64, 64)).shape == (1, 1, 1, 1)


def test_learning_rate_is_constant_then_decays_linearly_to_zero(tiny_config) -> None:  # type: ignore[no-untyped-def]
    factor = linear_decay(tiny_config(max_steps=100))
    assert [factor(s) for s in (0, 49, 50, 75, 100)] == [1.0, 1.0, 1.0, 0.5, 0.0]
    assert linear_decay(tiny_config(lr_policy="constant"))(99) == 1.0
