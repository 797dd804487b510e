"""Students that start from their teacher: pruned copies, factorised blocks, feature taps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import build_generator
from models.feature_taps import FeatureTapError, forward_with_taps, residual_taps
from models.mobile_resnet import SeparableConv2d
from models.resnet import ResnetBlock
from models.weight_transfer import TransferError, calibrate_separable, transfer_weights


def _teacher(name: str = "resnet_6blocks", *, ngf: int = 8, norm: str = "instance") -> nn.Module:
    torch.manual_seed(0)
    net = build_generator(name, ngf=ngf, norm=norm, init_type="kaiming")
    for p in net.parameters():  # biases too, so copying them is checked
        p.data.add_(torch.randn_like(p) * 0.05)
    return net.eval()


def _rank_one_blocks(net: nn.Module) -> None:
    """Make every residual-block convolution rank 1 per input channel (separable exactly)."""
    for block in net.modules():
        if isinstance(block, ResnetBlock):
            for conv in block.conv_block:
                if isinstance(conv, nn.Conv2d):
                    o, i = conv.weight.shape[:2]
                    u, v = torch.randn(o, i, 1, 1), torch.randn(1, i, 3, 3)
                    conv.weight.data.copy_(u * v * 0.3)


def _images(n: int = 2, side: int = 32) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(n, 3, side, side) * 2 - 1


def test_a_student_of_the_same_shape_becomes_the_teacher() -> None:
    teacher = _teacher()
    student = build_generator("resnet_6blocks", ngf=8)
    report = transfer_weights(teacher, student)
    x = _images()
    with torch.no_grad():
        assert torch.equal(student.eval()(x), teacher(x))
    assert report.teacher_blocks == (0, 1, 2, 3, 4, 5)
    assert report.stream_channels == tuple(range(32)) and not report.separable


def test_a_narrower_student_keeps_the_strongest_filters() -> None:
    teacher = _teacher()
    student = build_generator("resnet_6blocks", ngf=4)
    transfer_weights(teacher, student)
    stem_t, stem_s = teacher.model[1], student.model[1]
    strongest = stem_t.weight.abs().sum(dim=(1, 2, 3)).topk(4).indices.sort().values
    assert torch.equal(stem_s.weight, stem_t.weight[strongest])
    assert torch.equal(stem_s.bias, stem_t.bias[strongest])
    down_t, down_s = teacher.model[4], student.model[4]  # its inputs are the kept stem channels
    assert torch.equal(down_s.weight, down_t.weight[:, strongest][down_s_rows(down_t, strongest)])
    # the final layer keeps every image channel, from the kept inputs
    assert student.model[-2].weight.shape == (3, 4, 7, 7)


def down_s_rows(down: nn.Conv2d, inputs: torch.Tensor) -> torch.Tensor:
    return down.weight[:, inputs].abs().sum(dim=(1, 2, 3)).topk(8).indices.sort().values


def test_a_shallower_student_keeps_evenly_spaced_blocks() -> None:
    teacher = _teacher("resnet_9blocks")
    student = build_generator("resnet_3blocks", ngf=8)
    report = transfer_weights(teacher, student)
    assert report.teacher_blocks == (2, 5, 8)
    t_blocks = [m for m in teacher.model if isinstance(m, ResnetBlock)]
    s_blocks = [m for m in student.model if isinstance(m, ResnetBlock)]
    assert torch.equal(s_blocks[1].conv_block[1].weight, t_blocks[5].conv_block[1].weight)


def test_separable_blocks_reproduce_a_rank_one_teacher_exactly() -> None:
    """With no norm between the halves, the SVD split of a rank-1 kernel is exact."""
    teacher = _teacher(norm="none")
    _rank_one_blocks(teacher)
    student = build_generator("mobile_resnet_6blocks", ngf=8, norm="none").eval()
    assert transfer_weights(teacher, student).separable
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(student(x), teacher(x), atol=1e-5, rtol=1e-4)


def test_calibration_folds_the_inner_norm_into_the_pointwise_weights() -> None:
    """Instance norm divides each depthwise output by its deviation; calibrated on the image
    itself, the student computes what the (rank-1) teacher does."""
    teacher = _teacher()
    _rank_one_blocks(teacher)
    student = build_generator("mobile_resnet_6blocks", ngf=8).eval()
    transfer_weights(teacher, student)
    x = _images(n=1)
    with torch.no_grad():
        before = (student(x) - teacher(x)).abs().max()
        assert calibrate_separable(student, x) == 12  # two per block
        after = (student(x) - teacher(x)).abs().max()
    assert before > 0.05
    assert after < 1e-3


def test_transfers_that_cannot_work_are_refused() -> None:
    teacher = _teacher(ngf=4)
    with pytest.raises(TransferError, match="wider"):
        transfer_weights(teacher, build_generator("resnet_6blocks", ngf=8))
    with pytest.raises(TransferError, match="more blocks"):
        transfer_weights(teacher, build_generator("resnet_9blocks", ngf=4))
    with pytest.raises(TransferError, match="ResNet"):
        transfer_weights(build_generator("unet_128", ngf=4), build_generator("unet_128", ngf=4))
    mobile = build_generator("mobile_resnet_6blocks", ngf=4)
    with pytest.raises(TransferError, match="dense"):
        transfer_weights(mobile, build_generator("mobile_resnet_6blocks", ngf=4))


def test_taps_are_gan_compressions_places() -> None:
    assert residual_taps(build_generator("resnet_9blocks", ngf=4)) == [9, 12, 15, 18]
    assert residual_taps(build_generator("mobile_resnet_9blocks", ngf=4)) == [9, 12, 15, 18]
    assert residual_taps(build_generator("resnet_6blocks", ngf=4)) == [9, 11, 13, 15]
    with pytest.raises(FeatureTapError):
        residual_taps(build_generator("unet_128", ngf=4))


def test_tapped_forward_is_the_plain_forward_with_the_stream_on_the_side() -> None:
    net = build_generator("mobile_resnet_6blocks", ngf=4).eval()
    x = _images()
    seen: list[torch.Tensor] = []
    taps = residual_taps(net)
    hooks = [net.model[i].register_forward_hook(lambda m, a, out: seen.append(out)) for i in taps]
    with torch.no_grad():
        plain = net(x)
        out, features = forward_with_taps(net, x, taps)
    for hook in hooks:
        hook.remove()
    assert torch.equal(out, plain)
    assert len(features) == 4
    for feature, hooked in zip(features, seen[4:], strict=True):
        assert torch.equal(feature, hooked)
        assert feature.shape == (2, 16, 8, 8)  # the stream: 4 x ngf channels at a quarter side
    assert all(isinstance(m, SeparableConv2d) for m in [net.model[10].conv_block[1]])
