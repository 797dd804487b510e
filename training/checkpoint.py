"""Checkpoints without pickle: tensors in safetensors files, everything else in JSON.

RUN_DIR/checkpoints/step_00001000/
    weights.safetensors   network weights, keys "G.<param>", "F.<param>", "D_X.…", "D_Y.…"
    state.safetensors     optimiser moments, image pools, RNG states
    state.json            step, optimiser hyper-parameters, scheduler and grad-scaler state
    config.yaml           the run's config, so a checkpoint folder stands on its own

A checkpoint is written to a temporary folder and renamed into place, so a crash mid-write
never leaves a half checkpoint that resume would pick up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .config import TrainConfig

WEIGHTS_FILE = "weights.safetensors"
STATE_TENSORS_FILE = "state.safetensors"
STATE_JSON_FILE = "state.json"
CONFIG_FILE = "config.yaml"
_PREFIX = "step_"
_CHECKPOINT_NAME = re.compile(rf"{_PREFIX}\d+")


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, or belongs to a different kind of run."""


@dataclass
class TrainingState:
    """What a checkpoint holds besides the weights, in serialisable pieces."""

    step: int
    tensors: dict[str, Tensor]  # optimiser moments, pools, RNG
    meta: dict[str, Any]  # JSON: optimiser groups, schedulers, scaler


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"{_PREFIX}{step:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's complete checkpoints, oldest first. A `step_N.tmp` folder, left by a process
    killed while writing one (a retried Job's previous pod), is not a checkpoint."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if _CHECKPOINT_NAME.fullmatch(p.name) and (p / STATE_JSON_FILE).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def latest_checkpoint(run_dir: Path) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"no checkpoint in {run_dir} (expected {run_dir}/checkpoints/step_*)")
    return found[-1]


def save_checkpoint(
    run_dir: Path,
    cfg: TrainConfig,
    nets: dict[str, nn.Module],
    state: TrainingState,
    *,
    keep: int,
) -> Path:
    final = checkpoint_dir(run_dir, state.step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(weights_state(nets), str(tmp / WEIGHTS_FILE))
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in state.tensors.items()},
        str(tmp / STATE_TENSORS_FILE),
    )
    (tmp / STATE_JSON_FILE).write_text(json.dumps({"step": state.step, **state.meta}, indent=1))
    cfg.save(tmp / CONFIG_FILE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def weights_state(nets: dict[str, nn.Module]) -> dict[str, Tensor]:
    return {
        f"{name}.{key}": value.detach().cpu().contiguous()
        for name, net in nets.items()
        for key, value in net.state_dict().items()
    }


def load_weights(path: Path, nets: dict[str, nn.Module]) -> None:
    """Load `weights.safetensors` into the given networks (a subset is fine, e.g. only G, F)."""
    tensors = load_file(str(Path(path) / WEIGHTS_FILE))
    for name, net in nets.items():
        prefix = f"{name}."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            net.load_state_dict(own, strict=True)
        except RuntimeError as exc:
            first_line = str(exc).strip().splitlines()[0]
            raise CheckpointError(
                f"checkpoint {path} does not fit network {name}: {first_line}"
            ) from None


def checkpoint_step(path: Path) -> int:
    return int(json.loads((Path(path) / STATE_JSON_FILE).read_text())["step"])


def load_state(path: Path) -> TrainingState:
    meta = json.loads((Path(path) / STATE_JSON_FILE).read_text())
    tensors = load_file(str(Path(path) / STATE_TENSORS_FILE))
    return TrainingState(step=int(meta.pop("step")), tensors=tensors, meta=meta)


# --- optimiser state, split into tensors and JSON ------------------------------------------


def optimizer_state(
    name: str, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, slots in sd["state"].items():
        for slot, value in slots.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{name}.{pid}.{slot}"] = value
            else:
                scalars.setdefault(str(pid), {})[slot] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(
    name: str, optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, slot = key[len(prefix) :].split(".", 1)
            state.setdefault(int(pid), {})[slot] = value
    for pid, slots in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(slots)
    groups = [
        {**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


#: An optimiser and its LR schedule, named in checkpoints by what they train (G, D, S)
Stepper = tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]


def optimisation_state(
    steppers: Mapping[str, Stepper], scaler: torch.amp.GradScaler
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """What exact resume needs besides weights and RNG: each optimiser (tensors, and meta as
    `optim.NAME`), its schedule (`sched.NAME`) and the AMP scaler."""
    tensors: dict[str, Tensor] = {}
    meta: dict[str, Any] = {"scaler": scaler.state_dict()}
    for name, (optimiser, schedule) in steppers.items():
        optimiser_tensors, meta[f"optim.{name}"] = optimizer_state(name, optimiser)
        tensors |= optimiser_tensors
        meta[f"sched.{name}"] = schedule.state_dict()
    return tensors, meta


def load_optimisation_state(
    state: TrainingState, steppers: Mapping[str, Stepper], scaler: torch.amp.GradScaler
) -> None:
    for name, (optimiser, schedule) in steppers.items():
        load_optimizer_state(name, optimiser, state.tensors, state.meta[f"optim.{name}"])
        schedule.load_state_dict(state.meta[f"sched.{name}"])
    if state.meta.get("scaler"):
        scaler.load_state_dict(state.meta["scaler"])


class ResumesFromSteppers:
    """`training_state` and `resume_from` for a trainer whose state is its weights, its named
    steppers, the AMP scaler, the RNG and the step count (CUT, distillation)."""

    scaler: torch.amp.GradScaler
    step_count: int

    def weights(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def _steppers(self) -> dict[str, Stepper]:
        raise NotImplementedError

    def training_state(self) -> TrainingState:
        tensors, meta = optimisation_state(self._steppers(), self.scaler)
        tensors |= rng_state()
        return TrainingState(step=self.step_count, tensors=tensors, meta=meta)

    def resume_from(self, path: Path) -> None:
        load_weights(path, self.weights())
        state = load_state(path)
        load_optimisation_state(state, self._steppers(), self.scaler)
        load_rng_state(state.tensors)
        self.step_count = state.step


def rng_state() -> dict[str, Tensor]:
    state = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"rng.cuda.{i}"] = s
    return state


def load_rng_state(tensors: dict[str, Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
