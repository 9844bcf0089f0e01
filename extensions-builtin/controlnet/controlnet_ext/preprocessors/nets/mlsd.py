"""mlsd on mlsd_large_512_fp32.pth: M-LSD (MobileNetV2 trunk cut after the 96-channel stage, a
four-step FPN-like decoder) predicting, at half resolution, a line-centre heat map and each centre's
two end-point offsets. Lines whose centre score exceeds MLSD Value Threshold and whose length (in
half-resolution pixels) exceeds MLSD Distance Threshold are drawn 1 pixel wide, white on black."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from controlnet_ext.preprocessors.imaging import gray_to_rgb, scaled_and_padded
from controlnet_ext.preprocessors.types import DetectedMap, PreprocessInput

# MobileNetV2 stages kept by M-LSD: (expansion, channels, repeats, first stride)
TRUNK_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
TAPS = (1, 3, 6, 10, 13)    # trunk layers whose outputs feed the decoder (strides 2, 4, 8, 16, 16)
TOP_K = 200                 # line centres considered
PEAK_WINDOW = 3             # non-maximum suppression window on the centre map


class ConvBnReLU6(nn.Sequential):
    """conv (no bias) -> batch norm -> ReLU6; stride 2 pads right/bottom by one (TFLite's "same")."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        padding = 0 if stride == 2 else (kernel - 1) // 2
        super().__init__(nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))
        self.tf_pad = stride == 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (0, 1, 0, 1)) if self.tf_pad else x)


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = int(round(c_in * expansion))
        layers: list[nn.Module] = [ConvBnReLU6(c_in, hidden, kernel=1)] if expansion != 1 else []
        layers += [ConvBnReLU6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class Trunk(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBnReLU6(4, 32, stride=2)]   # RGB plus a constant channel
        channels = 32
        for expansion, c_out, repeats, stride in TRUNK_STAGES:
            for index in range(repeats):
                layers.append(InvertedResidual(channels, c_out, stride if index == 0 else 1, expansion))
                channels = c_out
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAPS:
                taps.append(x)
        return taps


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=padding, dilation=dilation),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Fuse(nn.Module):
    """1x1 projections of the skip (conv2) and of the deeper features (conv1, upsampled x2), stacked."""

    def __init__(self, skip_channels: int, deep_channels: int, upscale: bool = True) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(deep_channels, 64, 1)
        self.conv2 = _conv_bn_relu(skip_channels, 64, 1)
        self.upscale = upscale

    def forward(self, skip: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        deep = self.conv1(deep)
        if self.upscale:
            deep = F.interpolate(deep, scale_factor=2.0, mode="bilinear", align_corners=True)
        return torch.cat((self.conv2(skip), deep), dim=1)


class Refine(nn.Module):
    def __init__(self, channels: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(channels, channels, 3)
        self.conv2 = _conv_bn_relu(channels, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x) + x)


class Head(nn.Module):
    def __init__(self, channels: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(channels, channels, 3, dilation=5)
        self.conv2 = _conv_bn_relu(channels, channels, 3)
        self.conv3 = nn.Conv2d(channels, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class MLSDNet(nn.Module):
    """Module names (backbone, block15..block23) follow the released file's keys."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = Trunk()
        self.block15, self.block16 = Fuse(64, 96, upscale=False), Refine(128, 64)
        self.block17, self.block18 = Fuse(32, 64), Refine(128, 64)
        self.block19, self.block20 = Fuse(24, 64), Refine(128, 64)
        self.block21, self.block22 = Fuse(16, 64), Refine(128, 64)
        self.block23 = Head(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """1x4xHxW in -1..1 -> 1x9x(H/2)x(W/2): the centre logits, then (start xy, end xy) offsets."""
        c1, c2, c3, c4, c5 = self.backbone(x)
        x = self.block16(self.block15(c4, c5))
        x = self.block18(self.block17(c3, x))
        x = self.block20(self.block19(c2, x))
        x = self.block22(self.block21(c1, x))
        return self.block23(x)[:, 7:]


def detect_lines(output: torch.Tensor, score_threshold: float, length_threshold: float) -> list[tuple[float, ...]]:
    """(x0, y0, x1, y1) at input resolution for the confident, long enough line centres."""
    heat = torch.sigmoid(output[0, 0])
    peaks = F.max_pool2d(heat[None, None], PEAK_WINDOW, stride=1, padding=PEAK_WINDOW // 2)[0, 0] == heat
    heat = (heat * peaks).flatten()
    scores, indices = torch.topk(heat, min(TOP_K, heat.numel()))
    width = output.shape[-1]
    offsets = output[0, 1:5].permute(1, 2, 0).cpu().numpy()
    lines = []
    for score, index in zip(scores.cpu().numpy(), indices.cpu().numpy()):
        y, x = divmod(int(index), width)
        dx0, dy0, dx1, dy1 = offsets[y, x]
        if score > score_threshold and np.hypot(dx0 - dx1, dy0 - dy1) > length_threshold:
            lines.append((2 * (x + dx0), 2 * (y + dy0), 2 * (x + dx1), 2 * (y + dy1)))   # half -> full size
    return lines


def run_mlsd(inp: PreprocessInput, net: MLSDNet) -> DetectedMap:
    padded = scaled_and_padded(inp.image, inp.resolution)
    height, width = padded.image.shape[:2]
    # a fourth channel of ones, scaled with the colours as the release was trained (-> -0.992)
    rgb1 = np.concatenate([padded.image.astype(np.float32), np.ones((height, width, 1), np.float32)], axis=2)
    tensor = torch.from_numpy(rgb1 / 127.5 - 1.0).permute(2, 0, 1)[None].to(inp.device or "cpu")
    with torch.no_grad():
        lines = detect_lines(net(tensor), float(inp.threshold_a), float(inp.threshold_b))
    canvas = np.zeros((height, width), np.uint8)
    for x0, y0, x1, y1 in lines:
        cv2.line(canvas, (int(x0), int(y0)), (int(x1), int(y1)), 255, 1)
    return DetectedMap(gray_to_rgb(padded.crop(canvas)))
