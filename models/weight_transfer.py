"""Start a compact student generator from its teacher's weights, not from noise.

GAN Compression (Li et al., CVPR 2020) initialises its students from the teacher: each layer
keeps the teacher's most important filters (largest L1 norm), so the narrow network starts as a
pruned copy of the wide one and distillation only has to repair what pruning lost. A student
with fewer residual blocks keeps evenly spaced ones. Our mobile student has depthwise-separable
blocks where the teacher has dense 3x3 convolutions, so each pruned dense convolution is split
into the nearest depthwise + pointwise pair: for every input channel, the best rank-1
factorisation (SVD) of its (outputs x 3x3) slice. The instance norm between the two halves
rescales each channel by an image-dependent deviation; :func:`calibrate_separable` measures it on
real images and folds it into the pointwise weights, so the student starts close to the pruned
teacher in function, not just in shape.

Works for the ResNet generator family (any width, depth, norm, upsampling) and its mobile
variant; other architectures are refused with :class:`TransferError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from models.feature_taps import spread_blocks
from models.layers import BATCH_NORMS, INSTANCE_NORMS
from models.mobile_resnet import MobileResnetBlock, SeparableConv2d
from models.resnet import ResnetBlock, ResnetGenerator

__all__ = [
    "TransferError",
    "TransferReport",
    "calibrate_separable",
    "transfer_weights",
]

Conv = nn.Conv2d | nn.ConvTranspose2d


class TransferError(ValueError):
    """The student cannot start from this teacher (another family, or wider than it)."""


@dataclass(frozen=True)
class TransferReport:
    """What a transfer kept: the teacher's residual-stream channels and blocks, in order."""

    stream_channels: tuple[int, ...]
    teacher_blocks: tuple[int, ...]
    separable: bool  # dense blocks were factorised into depthwise-separable ones


@dataclass
class _Layer:
    conv: Conv
    norm: nn.Module | None  # the norm right after it, if any


def _outer_layers(net: ResnetGenerator) -> list[_Layer]:
    """The convolutions outside the residual blocks, in order, each with its following norm."""
    layers: list[_Layer] = []
    for module in net.model:
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            layers.append(_Layer(module, None))
        elif _is_norm(module) and layers and layers[-1].norm is None:
            layers[-1].norm = module
    return layers


def _blocks(net: ResnetGenerator) -> list[nn.Module]:
    return [m for m in net.model if isinstance(m, ResnetBlock | MobileResnetBlock)]


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (*BATCH_NORMS, *INSTANCE_NORMS, nn.Identity))


def _block_parts(block: nn.Module) -> list[tuple[nn.Conv2d | SeparableConv2d, nn.Module]]:
    """A block's two (convolution, norm) pairs; the convolution is dense or separable."""
    layers = list(cast(nn.Sequential, block.conv_block))
    convs = [m for m in layers if isinstance(m, nn.Conv2d | SeparableConv2d)]
    norms = [m for m in layers if _is_norm(m)]
    return list(zip(convs, norms, strict=True))


def _filters(conv: Conv) -> Tensor:
    """Weights as (out, in, kh, kw) whatever the convolution's kind."""
    w = conv.weight.detach()
    return w.transpose(0, 1) if isinstance(conv, nn.ConvTranspose2d) else w


def _importance(conv: Conv, inputs: Tensor) -> Tensor:
    """L1 norm of each output filter over the kept inputs (GAN Compression's criterion)."""
    return _filters(conv)[:, inputs].abs().sum(dim=(1, 2, 3))


def _top(scores: Tensor, k: int, what: str) -> Tensor:
    if k > scores.numel():
        raise TransferError(f"the student's {what} is wider ({k}) than the teacher's")
    return scores.topk(k).indices.sort().values


def _copy_conv(src: Conv, dst: Conv, outputs: Tensor, inputs: Tensor) -> None:
    w = _filters(src)[outputs][:, inputs]
    if tuple(w.shape[2:]) != tuple(dst.weight.shape[2:]) or type(src) is not type(dst):
        raise TransferError(f"layer kinds differ: {src} vs {dst}")
    dst.weight.copy_(w.transpose(0, 1) if isinstance(dst, nn.ConvTranspose2d) else w)
    if dst.bias is not None:
        _copy_bias(src, dst, outputs)


def _copy_bias(src: nn.Module, dst: Conv, outputs: Tensor) -> None:
    assert dst.bias is not None
    if isinstance(src.bias, Tensor):
        dst.bias.copy_(src.bias.detach()[outputs])
    else:
        dst.bias.zero_()


def _copy_norm(src: nn.Module | None, dst: nn.Module | None, channels: Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        value = getattr(dst, name, None)
        source = getattr(src, name, None)
        if isinstance(value, Tensor) and isinstance(source, Tensor):
            value.copy_(source.detach()[channels])


def _factorise(src: nn.Conv2d, dst: SeparableConv2d, outputs: Tensor, inputs: Tensor) -> None:
    """The dense 3x3 convolution's nearest depthwise x pointwise pair, input channel by channel:
    W[:, i] (out x 9) ~= s * u v^T, so depthwise_i = sqrt(s) v and pointwise[:, i] = sqrt(s) u."""
    depthwise, pointwise = dst.depthwise, dst.pointwise
    w = src.weight.detach()[outputs][:, inputs]  # (O, I, k, k)
    o, i, kh, kw = w.shape
    u, s, vh = torch.linalg.svd(w.permute(1, 0, 2, 3).reshape(i, o, kh * kw), full_matrices=False)
    root = s[:, :1].sqrt()  # (I, 1)
    depthwise.weight.copy_((vh[:, 0, :] * root).reshape(i, 1, kh, kw))
    pointwise.weight.copy_((u[:, :, 0] * root).T.reshape(o, i, 1, 1))
    if depthwise.bias is not None:
        depthwise.bias.zero_()
    if pointwise.bias is not None:
        _copy_bias(src, pointwise, outputs)


@torch.no_grad()
def transfer_weights(teacher: nn.Module, student: nn.Module) -> TransferReport:
    """Overwrite `student`'s weights with a pruned (and, for mobile blocks, factorised) copy of
    `teacher`'s. Both must be ResNet generators; the student no wider and no deeper."""
    if not isinstance(teacher, ResnetGenerator) or not isinstance(student, ResnetGenerator):
        raise TransferError("weights transfer between ResNet generators only")
    if any(isinstance(b, MobileResnetBlock) for b in _blocks(teacher)):
        raise TransferError("the teacher must have dense residual blocks")
    t_layers, s_layers = _outer_layers(teacher), _outer_layers(student)
    if len(t_layers) != len(s_layers):
        raise TransferError("the generators differ in layout outside the residual blocks")
    n_down = 2  # ResnetGenerator: stem, two down-sampling convs, blocks, two up, final
    t_blocks, s_blocks = _blocks(teacher), _blocks(student)
    if len(s_blocks) > len(t_blocks):
        raise TransferError(f"the student has more blocks ({len(s_blocks)}) than the teacher")
    kept = spread_blocks(len(t_blocks), len(s_blocks)) if s_blocks else []

    inputs = torch.arange(_filters(t_layers[0].conv).shape[1])
    for t, s in zip(t_layers[:n_down], s_layers[:n_down], strict=True):
        outputs = _top(_importance(t.conv, inputs), _filters(s.conv).shape[0], "width")
        _copy_conv(t.conv, s.conv, outputs, inputs)
        _copy_norm(t.norm, s.norm, outputs)
        inputs = outputs

    # the residual stream: one channel choice shared by every layer that writes into it
    down = t_layers[n_down]
    scores = _importance(down.conv, inputs)
    for index in kept:
        last_conv = _block_parts(t_blocks[index])[-1][0]
        scores = scores + _importance(last_conv, torch.arange(scores.numel()))  # type: ignore[arg-type]
    stream = _top(scores, _filters(s_layers[n_down].conv).shape[0], "residual width")
    _copy_conv(down.conv, s_layers[n_down].conv, stream, inputs)
    _copy_norm(down.norm, s_layers[n_down].norm, stream)

    separable = False
    for index, s_block in zip(kept, s_blocks, strict=True):
        block_inputs = stream
        parts = list(zip(_block_parts(t_blocks[index]), _block_parts(s_block), strict=True))
        for n, ((t_conv, t_norm), (s_conv, s_norm)) in enumerate(parts):
            last = n == len(parts) - 1
            width = _conv_out(s_conv)
            if not isinstance(t_conv, nn.Conv2d):
                raise TransferError("the teacher must have dense residual blocks")
            outputs = stream if last else _top(_importance(t_conv, block_inputs), width, "block")
            if isinstance(s_conv, SeparableConv2d):
                _factorise(t_conv, s_conv, outputs, block_inputs)
                separable = True
            else:
                _copy_conv(t_conv, s_conv, outputs, block_inputs)
            _copy_norm(t_norm, s_norm, outputs)
            block_inputs = outputs

    inputs = stream
    for t, s in zip(t_layers[n_down + 1 :], s_layers[n_down + 1 :], strict=True):
        width = _filters(s.conv).shape[0]
        if s is s_layers[-1]:  # the image's channels, all of them
            outputs = torch.arange(width)
        else:
            outputs = _top(_importance(t.conv, inputs), width, "width")
        _copy_conv(t.conv, s.conv, outputs, inputs)
        _copy_norm(t.norm, s.norm, outputs)
        inputs = outputs
    return TransferReport(tuple(stream.tolist()), tuple(kept), separable)


def _conv_out(conv: nn.Conv2d | SeparableConv2d) -> int:
    return (conv.pointwise if isinstance(conv, SeparableConv2d) else conv).out_channels


@torch.no_grad()
def calibrate_separable(student: nn.Module, images: Tensor) -> int:
    """Fold the deviation the norm inside each separable convolution divides by (measured on
    `images`, (B, C, H, W) in [-1, 1]) into its pointwise weights; returns how many it fixed.

    Done in one forward pass, block by block: a hook scales the pointwise half as soon as its
    depthwise half has run, so later blocks are measured on already calibrated inputs.
    """
    handles = []

    def scale_pointwise(sep: SeparableConv2d) -> None:
        def hook(module: nn.Module, args: Sequence[Tensor], out: Tensor) -> None:
            std = out.float().std(dim=(2, 3)).mean(dim=0)  # (C,) as the norm would see it
            sep.pointwise.weight.mul_(std.clamp_min(1e-6).view(1, -1, 1, 1))

        handles.append(sep.depthwise.register_forward_hook(hook))

    separables = [m for m in student.modules() if isinstance(m, SeparableConv2d)]
    for sep in separables:
        scale_pointwise(sep)
    try:
        was_training = student.training
        student.eval()
        student(images)
        student.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return len(separables)
