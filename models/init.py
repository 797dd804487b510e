"""Weight initialisation schemes of upstream CycleGAN (`init_weights` in networks.py)."""

from __future__ import annotations

from torch import nn

from models.layers import BATCH_NORMS, CONVOLUTIONS

INIT_TYPES: tuple[str, ...] = ("normal", "xavier", "kaiming", "orthogonal")


def init_weights(net: nn.Module, init_type: str = "normal", init_gain: float = 0.02) -> None:
    """Re-initialise every conv/linear and batch-norm layer of `net` in place.

    The papers train from N(0, 0.02) (DCGAN's recipe), not PyTorch's default Kaiming-uniform;
    `init_gain` is the std for 'normal' and the gain for 'xavier'/'orthogonal', and is unused
    by 'kaiming' (a=0, fan_in), as upstream. Biases start at 0; batch-norm scales at N(1, gain).
    """
    if init_type not in INIT_TYPES:
        raise ValueError(
            f"unknown init_type {init_type!r}; expected one of {', '.join(INIT_TYPES)}"
        )

    def init_module(m: nn.Module) -> None:
        if isinstance(m, (*CONVOLUTIONS, nn.Linear)):
            if init_type == "normal":
                nn.init.normal_(m.weight, 0.0, init_gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(m.weight, gain=init_gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(m.weight, gain=init_gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, BATCH_NORMS) and m.affine:
            nn.init.normal_(m.weight, 1.0, init_gain)
            nn.init.zeros_(m.bias)

    net.apply(init_module)
