"""A tiny random StableDiffusionSafetyChecker and CLIP image processor, saved with
`save_pretrained` in the layouts the app reads (models/safety_checker/, or a pipeline's
safety_checker/ + feature_extractor/). Concept thresholds force the verdict: every image flagged,
or none."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig, CLIPImageProcessor

IMAGE_SIZE = 32


def tiny_checker(flag_all: bool, seed: int = 0) -> StableDiffusionSafetyChecker:
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                         vocab_size=99, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=IMAGE_SIZE, patch_size=8),
        projection_dim=16)
    checker = StableDiffusionSafetyChecker(config).eval()
    with torch.no_grad():
        checker.concept_embeds.copy_(torch.randn_like(checker.concept_embeds))
        checker.special_care_embeds.copy_(torch.randn_like(checker.special_care_embeds))
        # flagged when cosine(image, concept) - threshold > 0; cosines lie in [-1, 1]
        checker.concept_embeds_weights.fill_(-10.0 if flag_all else 10.0)
        checker.special_care_embeds_weights.fill_(10.0)
    return checker


def tiny_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def write_checker(folder: Path, flag_all: bool, pipeline_layout: bool = False) -> Path:
    """`folder` holding the checker as the CompVis repository does (or as a pipeline does)."""
    model_dir = folder / "safety_checker" if pipeline_layout else folder
    processor_dir = folder / "feature_extractor" if pipeline_layout else folder
    tiny_checker(flag_all).save_pretrained(model_dir, safe_serialization=True)
    tiny_processor().save_pretrained(processor_dir)
    return folder
