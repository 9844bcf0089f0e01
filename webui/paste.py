"""Infotext → UI controls: PNG Info's "Send to", the ↙️ paste button and the gallery's send-to.

Every field `request_fields_from_infotext` names is written into its control. The checkpoint and
clip skip go into the quicksettings bar of this page only (the next request carries them as
overrides; the saved settings are not changed), as A1111's "override settings" do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import gradio as gr

from modules.infotext import parse_infotext, request_fields_from_infotext
from modules.processing import samplers
from webui import params
from webui.common import checkpoint_titles, vae_choices
from webui.env import UiEnv
from webui.quicksettings import Quicksettings
from webui.toprow import Toprow


@dataclass
class PasteTarget:
    toprow: Toprow
    sampler: params.SamplerControls
    size: params.SizeControls
    batch: params.BatchControls
    seed: params.SeedControls
    quick: Quicksettings
    denoising_strength: Optional[gr.Slider] = None
    inpaint: Any = None  # img2img.InpaintControls
    features: Optional[params.FeatureControls] = None  # restore faces, tiling
    hires: Any = None  # hires_fix.HiresControls (txt2img)
    extensions: Any = None  # extension_controls.ExtensionControls: those that read their infotext back

    def components(self) -> list:
        out = [self.toprow.prompt, self.toprow.negative_prompt, self.toprow.styles, self.sampler.sampler,
               self.sampler.scheduler, self.sampler.steps, self.size.width, self.size.height,
               self.batch.cfg_scale, self.seed.seed, self.seed.extra, self.seed.extra_row, self.seed.subseed,
               self.seed.subseed_strength, self.seed.seed_resize_from_w, self.seed.seed_resize_from_h,
               self.quick.checkpoint, self.quick.vae, self.quick.clip_skip]
        if self.denoising_strength is not None:
            out.append(self.denoising_strength)
        if self.inpaint is not None:
            i = self.inpaint
            out += [i.mask_blur, i.mask_mode, i.masked_content, i.inpaint_area, i.padding]
        if self.features is not None:
            out += [self.features.restore_faces, self.features.tiling]
        if self.hires is not None:
            out += self.hires.components()
        if self.extensions is not None:
            out += self.extensions.paste_components()
        return out


def find_checkpoint(env: UiEnv, name: str) -> Optional[str]:
    """The catalog title an infotext's "Model" (name or short hash) means, if any."""
    titles = checkpoint_titles(env.ctx.registry)
    wanted = name.strip().lower()
    for title in titles:
        low = title.lower()
        bare = low.split(" [")[0]
        stem = bare.rsplit(".", 1)[0] if "." in bare else bare
        tail = stem.rsplit("/", 1)[-1]
        if wanted in (low, bare, stem, tail) or f"[{wanted}]" in low:
            return title
    return None


def paste_values(env: UiEnv, text: str, target: PasteTarget) -> dict:
    """Control updates for infotext `text`; raises ValueError when it holds no parameters."""
    if not text or not text.strip():
        raise ValueError("There is no generation information to read.")
    fields = request_fields_from_infotext(text)
    out: dict = {target.toprow.prompt: fields.get("prompt", ""),
                 target.toprow.negative_prompt: fields.get("negative_prompt", ""),
                 target.toprow.styles: []}  # the pasted prompt already holds any styles
    if "sampler_name" in fields:
        try:
            spec, folded = samplers.split_sampler_name(str(fields["sampler_name"]))
            out[target.sampler.sampler] = spec.name
            schedule = str(fields.get("scheduler") or samplers.AUTOMATIC)
            if schedule == samplers.AUTOMATIC and folded is not None:
                schedule = folded.name
            out[target.sampler.scheduler] = samplers.find_schedule(schedule).name
        except ValueError as exc:
            gr.Warning(str(exc))
    simple = [("steps", target.sampler.steps), ("width", target.size.width), ("height", target.size.height),
              ("cfg_scale", target.batch.cfg_scale), ("seed", target.seed.seed)]
    if target.denoising_strength is not None:
        simple.append(("denoising_strength", target.denoising_strength))
    for key, component in simple:
        if key in fields:
            out[component] = fields[key]
    variation = (float(fields.get("subseed_strength") or 0) > 0
                 or int(fields.get("seed_resize_from_w") or 0) > 0 or int(fields.get("seed_resize_from_h") or 0) > 0)
    out[target.seed.extra] = variation
    out[target.seed.extra_row] = gr.Group(visible=variation)
    out[target.seed.subseed] = fields.get("subseed", -1)
    out[target.seed.subseed_strength] = fields.get("subseed_strength", 0.0)
    out[target.seed.seed_resize_from_w] = fields.get("seed_resize_from_w", 0)
    out[target.seed.seed_resize_from_h] = fields.get("seed_resize_from_h", 0)
    out[target.quick.clip_skip] = fields.get("clip_skip", 1)
    if fields.get("checkpoint"):
        title = find_checkpoint(env, str(fields["checkpoint"]))
        if title:
            out[target.quick.checkpoint] = title
        else:
            gr.Warning(f"Model {fields['checkpoint']!r} from the parameters is not available; "
                       "keeping the current checkpoint.")
    if fields.get("vae"):
        if fields["vae"] in vae_choices(env.ctx.registry):
            out[target.quick.vae] = fields["vae"]
        else:
            gr.Warning(f"VAE {fields['vae']!r} from the parameters is not available.")
    if target.features is not None:  # "Face restoration: <model>" / "Tiling: True", off when absent
        out[target.features.restore_faces] = bool(fields.get("restore_faces"))
        out[target.features.tiling] = bool(fields.get("tiling"))
    inpaint = fields.get("inpaint_options")
    if target.inpaint is not None and isinstance(inpaint, dict):
        i = target.inpaint
        out[i.mask_blur] = inpaint.get("mask_blur", 4)
        out[i.mask_mode] = "Inpaint not masked" if inpaint.get("invert_mask") else "Inpaint masked"
        out[i.masked_content] = _value(inpaint.get("masked_content", "original"))
        out[i.inpaint_area] = _value(inpaint.get("inpaint_area", "Whole picture"))
        out[i.padding] = inpaint.get("only_masked_padding", 32)
    if target.hires is not None:
        out.update(target.hires.paste_values(fields))
    if target.extensions is not None:
        out.update(target.extensions.paste_values(parse_infotext(text).params))
    return out


def _value(v: Any) -> Any:
    return getattr(v, "value", v)
