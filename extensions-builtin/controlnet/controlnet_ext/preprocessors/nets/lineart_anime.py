"""lineart_anime on lllyasviel's netG.pth: a pix2pix U-Net (8 stride-2 levels, 64 base channels,
parameter-free instance norms, tanh output) run on the image resized up to multiples of 256; the
module map is 255 - the predicted drawing.

The file's keys nest one `model.model.<i>` per level; `i` is the position of each layer in the
level's Sequential, so the layers below are listed in exactly that order."""

from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np
import torch
from torch import nn

from controlnet_ext.preprocessors.imaging import gray_to_rgb, scaled_and_padded
from controlnet_ext.preprocessors.nets.common import image_tensor
from controlnet_ext.preprocessors.types import DetectedMap, PreprocessInput

BASE = 64
LEVELS = 8      # stride-2 steps: a 256-pixel side reaches 1 pixel at the bottom
TILE = 2 ** LEVELS


class UNetLevel(nn.Module):
    """Down (4x4 stride-2 conv), the deeper levels, up (4x4 stride-2 transposed conv); every level
    but the outermost returns its input stacked with its output (the skip connection)."""

    def __init__(self, outer: int, inner: int, deeper: Optional["UNetLevel"], in_channels: Optional[int] = None,
                 outermost: bool = False) -> None:
        super().__init__()
        self.outermost = outermost
        down = nn.Conv2d(in_channels or outer, inner, 4, stride=2, padding=1)
        up_in = inner if deeper is None else inner * 2
        up = nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1)
        if outermost:
            layers = [down, deeper, nn.ReLU(True), up, nn.Tanh()]
        elif deeper is None:   # innermost
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, nn.InstanceNorm2d(outer)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down, nn.InstanceNorm2d(inner), deeper,
                      nn.ReLU(True), up, nn.InstanceNorm2d(outer)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the in-place LeakyReLU of the next level would overwrite x: keep a copy for the skip
        return self.model(x) if self.outermost else torch.cat([x, self.model(x.clone())], dim=1)


class AnimeLineUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        level = UNetLevel(BASE * 8, BASE * 8, None)                        # innermost
        for _ in range(LEVELS - 5):
            level = UNetLevel(BASE * 8, BASE * 8, level)
        for outer in (BASE * 4, BASE * 2, BASE):
            level = UNetLevel(outer, outer * 2, level)
        self.model = UNetLevel(1, BASE, level, in_channels=3, outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """1x3xHxW in -1..1 (H, W multiples of 256) -> 1x1xHxW drawing in -1..1 (1 = paper)."""
        return self.model(x)


def run_lineart_anime(inp: PreprocessInput, net: AnimeLineUNet) -> DetectedMap:
    padded = scaled_and_padded(inp.image, inp.resolution)
    height, width = padded.image.shape[:2]
    size = (TILE * math.ceil(width / TILE), TILE * math.ceil(height / TILE))
    enlarged = cv2.resize(padded.image, size, interpolation=cv2.INTER_CUBIC)
    with torch.no_grad():
        drawing = net(image_tensor(enlarged, inp.device, 1.0 / 127.5) - 1.0)[0, 0].cpu().numpy()
    drawing = cv2.resize(drawing * 127.5 + 127.5, (width, height), interpolation=cv2.INTER_CUBIC)
    drawing = np.clip(drawing, 0, 255).astype(np.uint8)
    return DetectedMap(gray_to_rgb(padded.crop(255 - drawing)))
