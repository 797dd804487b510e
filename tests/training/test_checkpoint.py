from pathlib import Path

import torch

from training import checkpoint as ckpt
from training.trainer import Trainer


def test_checkpoint_round_trip_restores_every_piece(tiny_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_config()
    a = Trainer(cfg, torch.device("cpu"))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    for _ in range(3):
        a.step(x, -x)
    path = ckpt.save_checkpoint(tmp_path, cfg, a.weights(), a.training_state(), keep=2)
    b = Trainer(cfg.model_copy(update={"seed": 99}), torch.device("cpu"))
    b.resume_from(path)
    assert b.step_count == 3
    for name, net in a.weights().items():
        other = b.weights()[name].state_dict()
        assert all(torch.equal(v, other[k]) for k, v in net.state_dict().items())
    assert b.sched_G.get_last_lr() == a.sched_G.get_last_lr()
    state_a, state_b = a.opt_G.state_dict()["state"], b.opt_G.state_dict()["state"]
    assert all(torch.equal(state_a[p]["exp_avg"], state_b[p]["exp_avg"]) for p in state_a)
    # the next step is identical (pool, RNG and optimiser restored)
    la, _ = a.step(x, -x)
    lb, _ = b.step(x, -x)
    assert all(torch.equal(la[k], lb[k]) for k in la)


def test_no_pickle_and_only_newest_are_kept(tiny_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_config()
    t = Trainer(cfg, torch.device("cpu"))
    for step in (1, 2, 3):
        t.step_count = step
        ckpt.save_checkpoint(tmp_path, cfg, t.weights(), t.training_state(), keep=2)
    kept = ckpt.list_checkpoints(tmp_path)
    assert [p.name for p in kept] == ["step_00000002", "step_00000003"]
    suffixes = {f.suffix for p in kept for f in p.iterdir()}
    assert suffixes == {".safetensors", ".json", ".yaml"}


def test_half_written_checkpoints_are_ignored(tiny_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_config()
    t = Trainer(cfg, torch.device("cpu"))
    good = ckpt.save_checkpoint(tmp_path, cfg, t.weights(), t.training_state(), keep=3)
    (tmp_path / "checkpoints" / "step_00000009.tmp").mkdir()
    (tmp_path / "checkpoints" / "step_00000010").mkdir()  # no state.json: incomplete
    assert ckpt.latest_checkpoint(tmp_path) == good
