"""softedge_pidinet / softedge_pidisafe / scribble_pidinet / t2ia_sketch_pidi on table5_pidinet.pth:
PiDiNet (pixel difference convolutions, "carv4" layout, 60 base channels, CDCM dilation modules of
24 channels and CSAM attention). Input is BGR in 0..1; the map is the fused side output's sigmoid.

Pixel difference convolutions are plain convolutions with transformed kernels (the weights in the
file are the raw ones): central ("cd": the centre tap minus the kernel's sum), angular ("ad": each
tap minus its clockwise neighbour) and radial ("rd": a 5x5 kernel, outer ring minus inner ring; its
8 directions take kernel numbers 1..8 in row-major order, number 0 unused, as the release was trained)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from controlnet_ext.preprocessors.imaging import Padded, gray_to_rgb, scaled_and_padded
from controlnet_ext.preprocessors.nets.common import image_tensor
from controlnet_ext.preprocessors.types import DetectedMap, PreprocessInput

BASE_CHANNELS = 60
FUSE_CHANNELS = 24
# carv4: the difference type of the stem and of the 15 blocks, in order
CARV4 = ("cd", "ad", "rd", "cv") * 4
# (name, input channels, output channels, stride) of the 15 blocks
BLOCKS = (
    ("block1_1", 60, 60, 1), ("block1_2", 60, 60, 1), ("block1_3", 60, 60, 1),
    ("block2_1", 60, 120, 2), ("block2_2", 120, 120, 1), ("block2_3", 120, 120, 1), ("block2_4", 120, 120, 1),
    ("block3_1", 120, 240, 2), ("block3_2", 240, 240, 1), ("block3_3", 240, 240, 1), ("block3_4", 240, 240, 1),
    ("block4_1", 240, 240, 2), ("block4_2", 240, 240, 1), ("block4_3", 240, 240, 1), ("block4_4", 240, 240, 1),
)
STAGE_ENDS = ("block1_3", "block2_4", "block3_4", "block4_4")   # the four side outputs
STAGE_CHANNELS = (60, 120, 240, 240)
# "ad": tap i minus tap CLOCKWISE_NEIGHBOUR[i] of the flattened 3x3 kernel (the centre cancels)
CLOCKWISE_NEIGHBOUR = [3, 0, 1, 6, 4, 2, 7, 8, 5]
RD_OUTER = [0, 2, 4, 10, 14, 20, 22, 24]   # flattened 5x5 positions fed by taps 1..8 of the 3x3
RD_INNER = [6, 7, 8, 11, 13, 16, 17, 18]


def difference_kernel(kind: str, weight: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(kernel for a plain conv2d, its padding) equivalent to the pixel difference conv `kind`."""
    if kind == "cv":
        return weight, 1
    out_ch, in_ch = weight.shape[:2]
    flat = weight.reshape(out_ch, in_ch, 9)
    if kind == "cd":
        flat = flat.clone()
        flat[:, :, 4] -= weight.sum(dim=(2, 3))
        return flat.reshape(weight.shape), 1
    if kind == "ad":
        return (flat - flat[:, :, CLOCKWISE_NEIGHBOUR]).reshape(weight.shape), 1
    if kind == "rd":
        big = weight.new_zeros(out_ch, in_ch, 25)
        big[:, :, RD_OUTER] = flat[:, :, 1:]
        big[:, :, RD_INNER] = -flat[:, :, 1:]
        return big.reshape(out_ch, in_ch, 5, 5), 2
    raise ValueError(f"unknown pixel difference type {kind!r}")


class DifferenceConv(nn.Module):
    """A 3x3 pixel difference convolution without bias (depthwise when groups = channels)."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, groups: int = 1) -> None:
        super().__init__()
        self.kind, self.groups = kind, groups
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels // groups, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, padding = difference_kernel(self.kind, self.weight)
        return F.conv2d(x, kernel, padding=padding, groups=self.groups)


class DifferenceBlock(nn.Module):
    """[max-pool] -> depthwise difference conv -> ReLU -> 1x1 conv, plus the (1x1-projected) input."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1)
        self.conv1 = DifferenceConv(kind, in_channels, in_channels, groups=in_channels)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        y = self.conv2(F.relu(self.conv1(x)))
        return y + (self.shortcut(x) if self.stride > 1 else x)


class DilationModule(nn.Module):
    """CDCM: ReLU, 1x1 to 24 channels, then the sum of four 3x3 convs dilated 5, 7, 9 and 11."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1)
        for index, dilation in enumerate((5, 7, 9, 11), start=1):
            dilated = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
            self.add_module(f"conv2_{index}", dilated)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(x))
        return sum(getattr(self, f"conv2_{index}")(x) for index in range(1, 5))


class SpatialAttention(nn.Module):
    """CSAM: the features scaled by a one-channel sigmoid map computed from them."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 1)
        self.conv2 = nn.Conv2d(4, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(self.conv1(F.relu(x))))


class MapReduce(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PiDiNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.init_block = DifferenceConv(CARV4[0], 3, BASE_CHANNELS)
        for (name, c_in, c_out, stride), kind in zip(BLOCKS, CARV4[1:]):
            self.add_module(name, DifferenceBlock(kind, c_in, c_out, stride))
        self.dilations = nn.ModuleList(DilationModule(c, FUSE_CHANNELS) for c in STAGE_CHANNELS)
        self.attentions = nn.ModuleList(SpatialAttention(FUSE_CHANNELS) for _ in STAGE_CHANNELS)
        self.conv_reduces = nn.ModuleList(MapReduce(FUSE_CHANNELS) for _ in STAGE_CHANNELS)
        self.classifier = nn.Conv2d(4, 1, 1)

    def forward(self, bgr01: torch.Tensor) -> torch.Tensor:
        """1x3xHxW BGR in 0..1 -> 1x1xHxW edge probability (the fused output)."""
        height, width = bgr01.shape[-2:]
        x = self.init_block(bgr01)
        sides = []
        for name, *_ in BLOCKS:
            x = getattr(self, name)(x)
            if name in STAGE_ENDS:
                stage = len(sides)
                side = self.conv_reduces[stage](self.attentions[stage](self.dilations[stage](x)))
                sides.append(F.interpolate(side, size=(height, width), mode="bilinear", align_corners=False))
        return torch.sigmoid(self.classifier(torch.cat(sides, dim=1)))


def edge_probability(inp: PreprocessInput, net: PiDiNet) -> tuple[np.ndarray, Padded]:
    padded = scaled_and_padded(inp.image, inp.resolution)
    bgr = np.ascontiguousarray(padded.image[:, :, ::-1])
    with torch.no_grad():
        edge = net(image_tensor(bgr, inp.device, 1.0 / 255.0))[0, 0].cpu().numpy()
    return edge, padded


def run_pidinet(inp: PreprocessInput, net: PiDiNet, safe: bool = False, sketch: bool = False) -> DetectedMap:
    edge, padded = edge_probability(inp, net)
    if sketch:
        edge = (edge > 0.5).astype(np.float32)          # t2ia_sketch_pidi: a binary sketch
    if safe:
        edge = np.floor(edge * 3.0) / 2.0               # quantise to 0, 1/2, 1
    return DetectedMap(gray_to_rgb(padded.crop(np.clip(edge * 255.0, 0, 255).astype(np.uint8))))


def run_scribble_pidinet(inp: PreprocessInput, net: PiDiNet) -> DetectedMap:
    import cv2

    from controlnet_ext.preprocessors.nets.hed import thin_lines

    soft = run_pidinet(inp, net).image[:, :, 0]
    lines = cv2.GaussianBlur(thin_lines(soft, 127, 3.0), (0, 0), 3.0)
    return DetectedMap(gray_to_rgb(np.where(lines > 4, 255, 0).astype(np.uint8)))
