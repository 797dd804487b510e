"""The four networks of a run, built from its config, and the two modules that call them.

Key (the CycleGAN paper's names): G (X→Y), F (Y→X), D_Y judges G's output, D_X judges F's.
Each pair module runs all of its networks' work for one step in a single forward call, which
is what DistributedDataParallel needs (one forward per backward).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from models import build_discriminator, build_generator

from .config import TrainConfig

NET_NAMES = ("G", "F", "D_X", "D_Y")


@dataclass
class Networks:
    G: nn.Module  # X → Y (A→B)
    F: nn.Module  # Y → X (B→A)
    D_X: nn.Module  # real X vs F(y)
    D_Y: nn.Module  # real Y vs G(x)

    def items(self) -> list[tuple[str, nn.Module]]:
        return [(name, getattr(self, name)) for name in NET_NAMES]


def build_run_generator(cfg: TrainConfig) -> nn.Module:
    """One generator as the run's config describes it, freshly initialised (G, F, a student)."""
    return build_generator(
        cfg.generator,
        ngf=cfg.ngf,
        norm=cfg.norm,
        use_dropout=cfg.dropout,
        init_type=cfg.init_type,
        init_gain=cfg.init_gain,
    )


def build_run_discriminator(cfg: TrainConfig) -> nn.Module:
    """One discriminator as the run's config describes it, freshly initialised."""
    return build_discriminator(
        cfg.discriminator,
        ndf=cfg.ndf,
        n_layers=cfg.n_layers_d,
        norm=cfg.norm,
        init_type=cfg.init_type,
        init_gain=cfg.init_gain,
    )


def build_networks(cfg: TrainConfig) -> Networks:
    return Networks(
        G=build_run_generator(cfg),
        F=build_run_generator(cfg),
        D_X=build_run_discriminator(cfg),
        D_Y=build_run_discriminator(cfg),
    )


class GeneratorPair(nn.Module):
    """Both translations, both reconstructions and (optionally) both identity mappings."""

    def __init__(self, G: nn.Module, F: nn.Module) -> None:
        super().__init__()
        self.G, self.F = G, F

    def forward(self, real_x: Tensor, real_y: Tensor, identity: bool) -> dict[str, Tensor]:
        fake_y = self.G(real_x)  # G(x)
        fake_x = self.F(real_y)  # F(y)
        out = {
            "fake_y": fake_y,
            "fake_x": fake_x,
            "rec_x": self.F(fake_y),  # F(G(x)) ≈ x
            "rec_y": self.G(fake_x),  # G(F(y)) ≈ y
        }
        if identity:
            out["idt_y"] = self.G(real_y)  # G(y) ≈ y
            out["idt_x"] = self.F(real_x)  # F(x) ≈ x
        return out


class DiscriminatorPair(nn.Module):
    """Both discriminators on real and fake batches (called separately: batch norm statistics
    of real and fake batches must not mix)."""

    def __init__(self, D_X: nn.Module, D_Y: nn.Module) -> None:
        super().__init__()
        self.D_X, self.D_Y = D_X, D_Y

    def forward(
        self, real_x: Tensor, real_y: Tensor, fake_x: Tensor, fake_y: Tensor
    ) -> dict[str, Tensor]:
        return {
            "real_x": self.D_X(real_x),
            "fake_x": self.D_X(fake_x),
            "real_y": self.D_Y(real_y),
            "fake_y": self.D_Y(fake_y),
        }
