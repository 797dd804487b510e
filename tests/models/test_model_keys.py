"""Our networks' state-dict keys and shapes equal the public junyanz checkpoints' exactly."""

from __future__ import annotations

from torch import nn

from models import DiscoGenerator, ResnetGenerator

ReferenceCase = tuple[nn.Module, dict[str, tuple[int, ...]], int]


def test_keys_and_shapes_match_upstream(reference_case: ReferenceCase) -> None:
    net, expected, _ = reference_case
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert list(ours) == list(expected)  # same order too: upstream's Sequential indices
    assert ours == expected


def test_instance_norms_sit_where_upstream_has_them(reference_case: ReferenceCase) -> None:
    net, _, n_instance_norms = reference_case
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == n_instance_norms
    assert all(not m.affine and not m.track_running_stats for m in norms)


def test_dropout_shifts_second_conv_like_upstream() -> None:
    net = ResnetGenerator(3, 3, ngf=8, n_blocks=2, use_dropout=True)
    keys = set(net.state_dict())
    assert isinstance(net.model[10].conv_block[4], nn.Dropout)
    assert "model.10.conv_block.6.weight" in keys
    assert "model.10.conv_block.5.weight" not in keys


def test_discogan_generator_matches_reference_layout() -> None:
    # SKTBrain/DiscoGAN `Generator.main` at 64x64: parameter keys and shapes, index by index.
    expected = {
        "main.0.weight": (64, 3, 4, 4),
        "main.2.weight": (128, 64, 4, 4),
        "main.3.weight": (128,),
        "main.3.bias": (128,),
        "main.5.weight": (256, 128, 4, 4),
        "main.6.weight": (256,),
        "main.6.bias": (256,),
        "main.8.weight": (512, 256, 4, 4),
        "main.9.weight": (512,),
        "main.9.bias": (512,),
        "main.11.weight": (512, 256, 4, 4),
        "main.12.weight": (256,),
        "main.12.bias": (256,),
        "main.14.weight": (256, 128, 4, 4),
        "main.15.weight": (128,),
        "main.15.bias": (128,),
        "main.17.weight": (128, 64, 4, 4),
        "main.18.weight": (64,),
        "main.18.bias": (64,),
        "main.20.weight": (64, 3, 4, 4),
    }
    net = DiscoGenerator(3, 3)
    assert {k: tuple(p.shape) for k, p in net.named_parameters()} == expected
    assert len(net.main) == 22
