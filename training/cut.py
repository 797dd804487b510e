"""Contrastive Unpaired Translation: CUT and FastCUT (Park, Efros, Zhang, Zhu, ECCV 2020).

One generator per direction and no cycle: the translation keeps its content because each patch
of the output, encoded by the generator's own encoder, must be recognised as the input patch at
the same position among the other patches of the same image (PatchNCE, `losses.patch_nce_loss`,
on the layers `nce_layers` through a projection head, `models.patch_sampler`). CUT adds the same
loss between target-domain images and their translation (identity NCE); FastCUT weighs NCE 10x,
drops the identity term and translates a mirrored batch half the time, comparing its features
mirrored back (flip equivariance). The adversarial part is CycleGAN's: LSGAN against a 70x70
PatchGAN per direction, no image pool. Details the paper leaves out follow taesungp's reference
code: D steps before G in each update, the keys of PatchNCE carry no gradient, the patch
positions are drawn per layer and shared by the query and the key, negatives come from the same
image only.

Key: G (A→B) judged by D_Y, F (B→A) judged by D_X; each has its projection head (H_G, H_F).
A run learns `direction` (AtoB, BtoA or both); the generators are the ResNet we export, so
export, evaluation, tiling and serving take a CUT run as they take a CycleGAN one. The heads
are training-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from models.feature_taps import forward_with_taps, tap_widths
from models.patch_sampler import PatchSampleMLP

from . import checkpoint as ckpt
from . import losses
from .config import ConfigError, TrainConfig
from .ddp import DistInfo
from .networks import build_run_discriminator, build_run_generator
from .optimisation import (
    adam_stepper,
    autocast_for,
    backward_and_step,
    set_requires_grad,
    to_device,
)

__all__ = ["CutGenerators", "CutJudges", "CutTrainer", "tap_channels"]

_NAMES = {"AtoB": ("G", "D_Y", "H_G"), "BtoA": ("F", "D_X", "H_F")}  # generator, judge, head
_SOURCE = {"AtoB": ("A", "B"), "BtoA": ("B", "A")}  # the batch keys: source, target domain


class CutGenerators(nn.Module):
    """The generators and their heads; one forward computes every direction's translation and
    PatchNCE losses (what DistributedDataParallel needs: one forward per backward)."""

    def __init__(
        self,
        cfg: TrainConfig,
        generators: Mapping[str, nn.Module],
        heads: Mapping[str, PatchSampleMLP],
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.generators = nn.ModuleDict(dict(generators))
        self.heads = nn.ModuleDict(dict(heads))

    def forward(
        self, sources: dict[str, Tensor], targets: dict[str, Tensor], flipped: bool
    ) -> dict[str, dict[str, Tensor]]:
        """Per direction: the translation of `sources` (`fake`), its PatchNCE loss (`nce`) and,
        for CUT, the identity NCE on `targets` (`nce_idt`). With `flipped`, G sees mirrored
        inputs, so `fake` is mirrored too (FastCUT's equivariance)."""
        out = {}
        for direction, generator in self.generators.items():
            x, y = sources[direction], targets[direction]
            real = torch.cat([x, y]) if self.cfg.nce_idt else x  # (2B or B, C, H, W)
            if flipped:
                real = torch.flip(real, [3])
            fake = generator(real)
            result = {"fake": fake[: len(x)]}
            result["nce"] = self._nce(direction, x, result["fake"], flipped)
            if self.cfg.nce_idt:
                result["nce_idt"] = self._nce(direction, y, fake[len(x) :], flipped)
            out[direction] = result
        return out

    def _nce(self, direction: str, source: Tensor, output: Tensor, flipped: bool) -> Tensor:
        """PatchNCE between the encodings of `output` (queries) and `source` (keys), averaged
        over the tapped layers, times lambda_nce."""
        cfg, generator = self.cfg, self.generators[direction]
        head = cast(PatchSampleMLP, self.heads[direction])
        _, queries = forward_with_taps(generator, output, cfg.nce_layers, encode_only=True)
        if flipped:  # back to the source's orientation, patch for patch
            queries = [torch.flip(q, [3]) for q in queries]
        with torch.no_grad():  # the keys carry no gradient (the reference detaches them)
            _, keys = forward_with_taps(generator, source, cfg.nce_layers, encode_only=True)
            key_embeddings, positions = head(keys, cfg.num_patches, None)
        query_embeddings, _ = head(queries, cfg.num_patches, positions)
        terms = [
            losses.patch_nce_loss(q, k, batch_size=len(source), temperature=cfg.nce_t).mean()
            for q, k in zip(query_embeddings, key_embeddings, strict=True)
        ]
        return cfg.lambda_nce * torch.stack(terms).mean()


class CutJudges(nn.Module):
    """Every direction's discriminator on its real and its (detached) fake batch, called
    separately (batch norm statistics of real and fake batches must not mix)."""

    def __init__(self, judges: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.judges = nn.ModuleDict(dict(judges))

    def forward(
        self, reals: dict[str, Tensor], fakes: dict[str, Tensor]
    ) -> dict[str, tuple[Tensor, Tensor]]:
        return {d: (judge(reals[d]), judge(fakes[d])) for d, judge in self.judges.items()}


def tap_channels(generator: nn.Module, taps: list[int], input_nc: int = 3) -> list[int]:
    """The width of each tapped layer, from a pass over a small image."""
    depth = len(generator.model)  # type: ignore[arg-type]
    bad = [t for t in taps if not 0 <= t < depth]
    if bad:
        raise ConfigError(f"nce_layers {bad} are not layers of the generator (it has {depth})")
    return tap_widths(generator, taps, input_nc)


class CutTrainer(ckpt.ResumesFromSteppers):
    """Generators, heads, discriminators, their optimisers and one update; the trainer's loop
    drives it (:class:`training.families.StepModel`)."""

    def __init__(self, cfg: TrainConfig, device: torch.device, dist_info: DistInfo) -> None:
        if cfg.gan_mode == "wgangp":
            raise ConfigError("cut and fastcut train with lsgan, vanilla or hinge, not wgangp")
        self.cfg, self.device, self.dist_info = cfg, device, dist_info
        torch.manual_seed(cfg.seed)
        self.nets: dict[str, nn.Module] = {}
        heads: dict[str, PatchSampleMLP] = {}
        for direction in cfg.directions:
            generator_name, judge_name, head_name = _NAMES[direction]
            generator = build_run_generator(cfg)
            channels = tap_channels(generator, cfg.nce_layers)
            heads[direction] = PatchSampleMLP(
                channels, units=cfg.nce_units, init_gain=cfg.init_gain
            )
            self.nets |= {
                generator_name: generator,
                judge_name: build_run_discriminator(cfg),
                head_name: heads[direction],
            }
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        for net in self.nets.values():
            net.to(device)
            if not isinstance(net, PatchSampleMLP):
                net.to(memory_format=memory_format)
        # a rank-specific stream for patch positions and flips (DDP syncs weights, not draws)
        torch.manual_seed(cfg.seed + 1_000 * dist_info.rank)
        generators = {d: self.nets[_NAMES[d][0]] for d in cfg.directions}
        judges = {d: self.nets[_NAMES[d][1]] for d in cfg.directions}
        trained_with_g = (*generators.values(), *heads.values())  # the reference: same Adam
        self.opt_G, self.sched_G = adam_stepper(
            cfg, device, chain(*(m.parameters() for m in trained_with_g))
        )
        self.opt_D, self.sched_D = adam_stepper(
            cfg, device, chain(*(j.parameters() for j in judges.values()))
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")

        def compile_(net: nn.Module) -> nn.Module:
            return torch.compile(net, mode=cfg.compile_mode) if cfg.compile else net  # type: ignore[return-value]

        self.judges = {d: compile_(j) for d, j in judges.items()}
        self.judge_modules: nn.Module = CutJudges(self.judges)
        compiled = {d: compile_(g) for d, g in generators.items()}
        module: nn.Module = CutGenerators(cfg, compiled, heads)
        if dist_info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=ids)
            self.judge_modules = DistributedDataParallel(self.judge_modules, device_ids=ids)
        self.generators = module
        self.step_count = 0

    def train_step(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """One update: translate, then D on real vs. fake, then G (and heads) on GAN + NCE."""
        cfg = self.cfg
        real = {key: to_device(batch[key], cfg, self.device) for key in ("A", "B")}
        sources = {d: real[_SOURCE[d][0]] for d in cfg.directions}
        targets = {d: real[_SOURCE[d][1]] for d in cfg.directions}
        # FastCUT mirrors the whole batch half the time; the draw is on the global stream,
        # which checkpoints restore, so a resumed run draws what the uninterrupted one drew
        flipped = cfg.flip_equivariance and bool(torch.rand(()) < 0.5)
        with autocast_for(cfg, self.device):
            out = self.generators(sources, targets, flipped)

        judges = list(self.judges.values())
        set_requires_grad(judges, True)
        logs: dict[str, Tensor] = {}
        with autocast_for(cfg, self.device):
            loss_D = self._discriminator_losses(out, targets, logs)
        backward_and_step(self.scaler, self.opt_D, loss_D)

        set_requires_grad(judges, False)
        with autocast_for(cfg, self.device):
            loss_G = torch.zeros((), device=self.device)
            for d, result in out.items():
                verdict = self.judges[d](result["fake"])
                logs[f"{d}/gan"] = losses.generator_adversarial_loss(cfg.gan_mode, verdict)
                logs[f"{d}/nce"] = result["nce"]
                nce = result["nce"]
                if "nce_idt" in result:
                    logs[f"{d}/nce_idt"] = result["nce_idt"]
                    nce = (nce + result["nce_idt"]) * 0.5
                loss_G = loss_G + cfg.lambda_gan * logs[f"{d}/gan"] + nce
        backward_and_step(self.scaler, self.opt_G, loss_G)
        self.scaler.update()
        self.sched_G.step()
        self.sched_D.step()
        self.step_count += 1
        logs["G/total"] = loss_G
        return {k: v.detach() for k, v in logs.items()}, self._visuals(sources, out)

    def _discriminator_losses(
        self,
        out: dict[str, dict[str, Tensor]],
        targets: dict[str, Tensor],
        logs: dict[str, Tensor],
    ) -> Tensor:
        fakes = {d: result["fake"].detach() for d, result in out.items()}
        logits = self.judge_modules(targets, fakes)
        for d, (real, fake) in logits.items():
            logs[_NAMES[d][1]] = losses.discriminator_loss(self.cfg.gan_mode, real, fake)
        return torch.stack([logs[_NAMES[d][1]] for d in logits]).sum()

    def _visuals(
        self, sources: dict[str, Tensor], out: dict[str, dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """Real then translated, per direction (CycleGAN's names: x, G(x), y, F(y))."""
        names = {"AtoB": ("real_x", "fake_y"), "BtoA": ("real_y", "fake_x")}
        visuals = {}
        for d, result in out.items():
            visuals[names[d][0]] = sources[d]
            visuals[names[d][1]] = result["fake"]
        return visuals

    def learning_rate(self) -> float:
        return float(self.sched_G.get_last_lr()[0])

    def weights(self) -> dict[str, nn.Module]:
        return dict(self.nets)

    def _steppers(self) -> dict[str, ckpt.Stepper]:
        return {"G": (self.opt_G, self.sched_G), "D": (self.opt_D, self.sched_D)}
