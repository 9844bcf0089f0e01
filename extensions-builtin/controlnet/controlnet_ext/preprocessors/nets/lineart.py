"""lineart_realistic / lineart_coarse on lllyasviel's sk_model.pth / sk_model2.pth: an image-to-
sketch generator (7x7 stem, two stride-2 convs, three residual blocks, two transposed convs, 7x7
head with a sigmoid; instance norms without parameters). The module map is 255 - the sketch."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from controlnet_ext.preprocessors.imaging import gray_to_rgb, scaled_and_padded
from controlnet_ext.preprocessors.nets.common import image_tensor
from controlnet_ext.preprocessors.types import DetectedMap, PreprocessInput

RESIDUAL_BLOCKS = 3


def _conv_norm_relu(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.InstanceNorm2d(channels), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), *_conv_norm_relu(nn.Conv2d(channels, channels, 3), channels),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class SketchGenerator(nn.Module):
    """Attribute names and Sequential positions follow the released files' keys."""

    def __init__(self) -> None:
        super().__init__()
        self.model0 = nn.Sequential(nn.ReflectionPad2d(3), *_conv_norm_relu(nn.Conv2d(3, 64, 7), 64))
        self.model1 = nn.Sequential(
            *_conv_norm_relu(nn.Conv2d(64, 128, 3, stride=2, padding=1), 128),
            *_conv_norm_relu(nn.Conv2d(128, 256, 3, stride=2, padding=1), 256),
        )
        self.model2 = nn.Sequential(*(ResidualBlock(256) for _ in range(RESIDUAL_BLOCKS)))
        self.model3 = nn.Sequential(
            *_conv_norm_relu(nn.ConvTranspose2d(256, 128, 3, stride=2, padding=1, output_padding=1), 128),
            *_conv_norm_relu(nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1, output_padding=1), 64),
        )
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(64, 1, 7), nn.Sigmoid())

    def forward(self, rgb01: torch.Tensor) -> torch.Tensor:
        """1x3xHxW in 0..1 -> 1x1xHxW sketch in 0..1 (1 = paper, 0 = line)."""
        return self.model4(self.model3(self.model2(self.model1(self.model0(rgb01)))))


def run_lineart(inp: PreprocessInput, net: SketchGenerator) -> DetectedMap:
    padded = scaled_and_padded(inp.image, inp.resolution)
    with torch.no_grad():
        sketch = net(image_tensor(padded.image, inp.device, 1.0 / 255.0))[0, 0].cpu().numpy()
    sketch = np.clip(sketch * 255.0, 0, 255).astype(np.uint8)
    return DetectedMap(gray_to_rgb(padded.crop(255 - sketch)))
