"""MAC counts: ptflops checked against a hand count, and the students' ratios to the teacher."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import build_generator, count_parameters
from models.complexity import architecture_complexity, network_complexity
from models.manifest import Architecture
from models.mobile_resnet import MobileResnetBlock


def test_one_convolution_matches_the_hand_count() -> None:
    """Conv2d(3, 64, 7) on a 262x262 input (ResNet's stem after its reflection pad of 3)."""
    out_pixels = 256 * 256
    multiplies = out_pixels * 64 * (3 * 7 * 7)  # each output: a 3x7x7 dot product
    bias = out_pixels * 64  # one add per output element, which ptflops counts as a MAC
    counted = network_complexity(nn.Conv2d(3, 64, 7), side=262)
    assert counted.macs == multiplies + bias == 620_756_992
    assert counted.params == 64 * 3 * 49 + 64


def test_paper_generator_and_students() -> None:
    teacher = architecture_complexity(
        Architecture(generator="resnet_9blocks", ngf=64, norm="instance")
    )
    assert teacher.params == count_parameters(build_generator("resnet_9blocks"))
    assert teacher.gmacs == pytest.approx(49.66, abs=0.01)
    mobile = architecture_complexity(
        Architecture(generator="mobile_resnet_9blocks", ngf=32, norm="instance")
    )
    assert teacher.macs / mobile.macs > 15  # depthwise-separable blocks at half the width
    narrow = architecture_complexity(
        Architecture(generator="resnet_6blocks", ngf=16, norm="instance")
    )
    assert teacher.macs / narrow.macs > 20


def test_mobile_generator_keeps_the_layout_outside_its_blocks() -> None:
    mobile = build_generator("mobile_resnet_6blocks", ngf=8)
    plain = build_generator("resnet_6blocks", ngf=8)
    assert sum(isinstance(m, MobileResnetBlock) for m in mobile.modules()) == 6
    outside = [k for k in plain.state_dict() if "conv_block" not in k]
    assert all(k in mobile.state_dict() for k in outside)
    x = torch.rand(2, 3, 36, 44) * 2 - 1
    assert mobile(x).shape == x.shape
