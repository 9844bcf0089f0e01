"""softedge_hed / softedge_hedsafe / scribble_hed on lllyasviel's ControlNetHED.pth (the Apache-2
HED re-implementation: RGB input in 0..255, five VGG-like stages, each with a 1x1 side output)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from controlnet_ext.preprocessors.imaging import gray_to_rgb, scaled_and_padded
from controlnet_ext.preprocessors.nets.common import image_tensor
from controlnet_ext.preprocessors.types import DetectedMap, PreprocessInput

# (input channels, output channels, convolutions) of stages block1..block5
STAGES = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))


class HedStage(nn.Module):
    """3x3 conv + ReLU layers (after a 2x2 max-pool, except the first stage) and a side output."""

    def __init__(self, in_channels: int, channels: int, layers: int) -> None:
        super().__init__()
        widths = [in_channels] + [channels] * layers
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths, widths[1:]))
        self.projection = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor, pool: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if pool:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class HedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))   # the mean colour subtracted first
        for index, (a, b, layers) in enumerate(STAGES, start=1):
            self.add_module(f"block{index}", HedStage(a, b, layers))

    def forward(self, rgb255: torch.Tensor) -> torch.Tensor:
        """1x3xHxW in 0..255 -> 1xHxW edge probability: the mean of the side outputs, sigmoid."""
        height, width = rgb255.shape[-2:]
        x = rgb255 - self.norm
        sides = []
        for index in range(1, len(STAGES) + 1):
            x, side = getattr(self, f"block{index}")(x, pool=index > 1)
            sides.append(F.interpolate(side, size=(height, width), mode="bilinear", align_corners=False))
        return torch.sigmoid(torch.cat(sides, dim=1).mean(dim=1))


def soft_edges(inp: PreprocessInput, net: HedNet, safe: bool) -> np.ndarray:
    """The HxW uint8 edge map at the processor resolution."""
    padded = scaled_and_padded(inp.image, inp.resolution)
    with torch.no_grad():
        edge = net(image_tensor(padded.image, inp.device, 1.0))[0].double().cpu().numpy()
    if safe:
        edge = np.floor(edge * 3.0) / 2.0     # quantise to 0, 1/2, 1 (hides shading the model might copy)
    return padded.crop(np.clip(edge * 255.0, 0, 255).astype(np.uint8))


def run_hed(inp: PreprocessInput, net: HedNet, safe: bool = False) -> DetectedMap:
    return DetectedMap(gray_to_rgb(soft_edges(inp, net, safe)))


def thin_lines(soft: np.ndarray, level: float, sigma: float) -> np.ndarray:
    """Non-maximum suppression: keep blurred pixels that are a maximum along any of the four
    directions, then threshold at `level`."""
    blurred = cv2.GaussianBlur(soft.astype(np.float32), (0, 0), sigma)
    kept = np.zeros_like(blurred)
    directions = (
        [[0, 0, 0], [1, 1, 1], [0, 0, 0]],
        [[0, 1, 0], [0, 1, 0], [0, 1, 0]],
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        [[0, 0, 1], [0, 1, 0], [1, 0, 0]],
    )
    for kernel in directions:
        is_peak = cv2.dilate(blurred, np.array(kernel, dtype=np.uint8)) == blurred
        kept = np.where(is_peak, blurred, kept)
    return np.where(kept > level, 255, 0).astype(np.uint8)


def run_scribble_hed(inp: PreprocessInput, net: HedNet) -> DetectedMap:
    """HED edges thinned, thickened by a blur and made binary: a scribble."""
    lines = thin_lines(soft_edges(inp, net, safe=False), 127, 3.0)
    lines = cv2.GaussianBlur(lines, (0, 0), 3.0)
    return DetectedMap(gray_to_rgb(np.where(lines > 4, 255, 0).astype(np.uint8)))
