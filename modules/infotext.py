"""Infotext: the A1111 "parameters" text that makes every image reproducible.

Three parts, all pure functions over strings and PIL images:

1. `build_infotext` writes the text exactly as A1111's `create_infotext` does: the prompt, a
   `Negative prompt: ...` line when there is one, then one line of `Key: value` pairs in A1111's
   key order, with values that hold `,` `:` or a newline JSON-quoted.
2. `parse_infotext` reads any such text back (A1111's `parse_generation_parameters` rules), and
   `request_fields_from_infotext` turns it into `GenerationRequest` field values.
3. `read_infotext` finds the text in an image: the PNG "parameters" text chunk, or the EXIF
   UserComment that A1111 writes into JPEG and WEBP files.

Keys whose absence means "off" (Clip skip, RNG, Schedule type, variation seed, seed resize) are
left out of the text at their defaults and filled back in by `request_fields_from_infotext`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Optional

from PIL import Image

from modules.generation.request import GenerationRequest, InpaintArea, MaskedContent, Mode, RngSource
from modules.generation.result import ImageParams

INFOTEXT_KEY = "parameters"  # the PNG text chunk name A1111 writes and reads
EXIF_IFD_POINTER = 0x8769
EXIF_USER_COMMENT = 0x9286

# A1111's pattern for one "Key: value" pair on the parameters line: a key is a word character
# followed by word characters, spaces, dashes or slashes; a value is a JSON string or runs to the
# next comma.
_PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_KEY_RE = re.compile(r"\w[\w \-/]+")
_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")
_NEGATIVE_PREFIX = "Negative prompt:"

# Keys A1111's img2img writes for an inpaint job; any of them marks an inpaint infotext.
_INPAINT_KEYS = ("Mask blur", "Mask mode", "Inpaint area", "Masked area padding", "Masked content")
_INVERT_MASK_MODE = "Inpaint not masked"
# A1111's infotext keys for the sampler parameters (samplers.step_options writes them)
# A1111's paste rule for "Hires. fix": on when these come with "Denoising strength"
_HIRES_KEYS = ("Hires upscale", "Hires upscaler", "Hires resize")
_SAMPLER_PARAM_KEYS = {"Eta": "eta", "Eta DDIM": "eta", "Sigma churn": "s_churn", "Sigma tmin": "s_tmin",
                       "Sigma tmax": "s_tmax", "Sigma noise": "s_noise"}


@dataclass(frozen=True)
class InfotextData:
    """An infotext taken apart. `params` holds the parameters line as written: unquoted string
    values by key, "Size" still as "512x512"."""

    prompt: str
    negative_prompt: str
    params: dict[str, str]


# ---------------------------------------------------------------------------------------------
# writing


def format_number(value: Any) -> str:
    """A1111 shows UI numbers the way the browser sent them: 7.0 → "7", 7.5 → "7.5"."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return repr(value)
    return str(value)


def quote(value: str) -> str:
    """A1111's quote(): JSON-quote a value holding `,` `:` or a newline so the parameters line
    stays one line of comma-separated pairs. Also quotes the values A1111 writes raw but cannot
    read back unchanged: ones holding a carriage return, starting with a double quote, or with
    whitespace at either end. Every other value is written exactly as A1111 writes it."""
    if any(ch in value for ch in ",:\n\r") or value.startswith('"') or value != value.strip():
        return json.dumps(value, ensure_ascii=False)
    return value


def generation_params(request: GenerationRequest, image: ImageParams) -> dict[str, Any]:
    """The parameters line as an ordered dict of typed values, A1111's key order; None values are
    left out. What the infotext renders, for readers that need values, not text (file name
    patterns, the API's extra_generation_params): they never parse the text back."""
    uses_variation = request.subseed_strength != 0
    uses_init_image = request.mode in (Mode.IMG2IMG, Mode.INPAINT)
    params: dict[str, Any] = {
        "Steps": request.steps,
        "Sampler": image.sampler_name,
        "Schedule type": image.scheduler or None,
        "CFG scale": request.cfg_scale,
        "Seed": image.seed,
        "Face restoration": None,  # its place in A1111's order; the model name comes with the extras
        "Size": f"{image.width}x{image.height}",
        "Model hash": image.model_hash or None,
        "Model": image.model_name or None,
        "VAE hash": image.vae_hash or None,
        "VAE": image.vae_name or None,
        "Variation seed": image.subseed if uses_variation else None,
        "Variation seed strength": request.subseed_strength if uses_variation else None,
        "Seed resize from": (
            f"{request.seed_resize_from_w}x{request.seed_resize_from_h}"
            if request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0
            else None
        ),
        # txt2img writes it for hires fix only; the "Hires ..." keys come with the image's extras
        "Denoising strength": request.denoising_strength if uses_init_image or request.hires is not None else None,
        "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
        "RNG": request.rng_source.value if request.rng_source is not RngSource.DEVICE else None,
        "Tiling": "True" if request.tiling else None,
    }
    # A1111 keeps these in p.extra_generation_params, in the order img2img sets them.
    if request.mode is Mode.INPAINT and request.inpaint is not None:
        opts = request.inpaint
        params["Mask blur"] = opts.mask_blur  # the UI writes it for every masked job, 0 included
        if opts.invert_mask:
            params["Mask mode"] = _INVERT_MASK_MODE
        if opts.inpaint_area is InpaintArea.ONLY_MASKED:
            params["Inpaint area"] = InpaintArea.ONLY_MASKED.value
            params["Masked area padding"] = opts.only_masked_padding
        if opts.masked_content is not MaskedContent.ORIGINAL:
            params["Masked content"] = opts.masked_content.value
    for key, value in image.extra.items():
        if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
            raise ValueError(
                f"infotext key {key!r} cannot be read back: it must start with a letter, digit or _ "
                "and hold only those, spaces, '-' and '/'"
            )
        params[key] = value  # an existing key keeps its place and takes the new value, as in A1111
    params["Version"] = image.version or None
    return {k: v for k, v in params.items() if v is not None}


def build_infotext(request: GenerationRequest, image: ImageParams) -> str:
    """The A1111 infotext for one image of `request`."""
    pairs = []
    for key, value in generation_params(request, image).items():
        text = format_number(value)
        pairs.append(key if text == key else f"{key}: {quote(text)}")
    negative = f"\n{_NEGATIVE_PREFIX} {image.negative_prompt}" if image.negative_prompt else ""
    return f"{image.prompt}{negative}\n{', '.join(pairs)}".strip()


# ---------------------------------------------------------------------------------------------
# reading


def _unquote(value: str) -> str:
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, str) else value


def parse_infotext(text: str) -> InfotextData:
    """Take an infotext apart the way A1111's parse_generation_parameters does.

    The last line is the parameters line when it holds at least three `Key: value` pairs;
    otherwise it belongs to the prompt. Lines up to one starting with "Negative prompt:" are the
    prompt, the rest the negative prompt; each line is stripped and the lines joined with "\\n".
    """
    *lines, last_line = text.strip().split("\n")
    if len(_PARAM_RE.findall(last_line)) < 3:
        lines.append(last_line)
        last_line = ""

    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith(_NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(_NEGATIVE_PREFIX):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)

    # A1111 drops the empty string that starts each prompt ("" + line, never "\n" + line).
    def join(parts: list[str]) -> str:
        out = ""
        for part in parts:
            out += ("" if out == "" else "\n") + part
        return out

    params: dict[str, str] = {}
    for key, value in _PARAM_RE.findall(last_line):
        params[key] = _unquote(value)
    return InfotextData(prompt=join(prompt_lines), negative_prompt=join(negative_lines), params=params)


def _to_int(value: str) -> int:
    return int(value.strip())


def _to_float(value: str) -> float:
    return float(value.strip())


def _to_size(value: str) -> tuple[int, int]:
    match = _SIZE_RE.match(value.strip())
    if match is None:
        raise ValueError(f"expected WIDTHxHEIGHT, got {value!r}")
    return int(match.group(1)), int(match.group(2))


def request_fields_from_infotext(text: str, *, strict: bool = False) -> dict[str, object]:
    """GenerationRequest field values from an infotext ("send to txt2img", the API's `infotext`).

    Keys are GenerationRequest field names, typed (int, float, enums), plus "inpaint_options": a
    dict of InpaintOptions fields without the mask, present only for inpaint infotexts. Keys whose
    absence A1111 reads as a default get that default (clip_skip 1, rng_source GPU, scheduler
    "Automatic", subseed_strength 0, seed resize 0x0). Sampler names are returned as written, old
    combined names ("DPM++ 2M Karras") included: the sampler table resolves them. "checkpoint" is
    the "Model" name, or the "Model hash" when the name is missing. A value that cannot be read
    is skipped, or raises ValueError naming its key when `strict`.
    """
    data = parse_infotext(text)
    params = data.params
    fields: dict[str, object] = {"prompt": data.prompt, "negative_prompt": data.negative_prompt}

    def take(key: str, convert, *targets: str, into: Optional[dict[str, object]] = None) -> None:
        if key not in params:
            return
        try:
            value = convert(params[key])
        except (ValueError, TypeError) as err:
            if strict:
                raise ValueError(f"infotext {key!r}: cannot read {params[key]!r}: {err}") from err
            return
        out = fields if into is None else into
        if len(targets) == 1:
            out[targets[0]] = value
        else:
            out.update(zip(targets, value))

    take("Steps", _to_int, "steps")
    take("Sampler", str.strip, "sampler_name")
    fields["scheduler"] = "Automatic"
    take("Schedule type", str.strip, "scheduler")
    take("CFG scale", _to_float, "cfg_scale")
    take("Seed", _to_int, "seed")
    take("Size", _to_size, "width", "height")
    take("Variation seed", _to_int, "subseed")
    fields["subseed_strength"] = 0.0
    take("Variation seed strength", _to_float, "subseed_strength")
    fields["seed_resize_from_w"], fields["seed_resize_from_h"] = 0, 0
    take("Seed resize from", _to_size, "seed_resize_from_w", "seed_resize_from_h")
    take("Denoising strength", _to_float, "denoising_strength")
    for key, target in _SAMPLER_PARAM_KEYS.items():  # written only off their defaults: absent = default
        fields.setdefault(target, None)
        take(key, _to_float, target)
    fields["clip_skip"] = 1
    take("Clip skip", _to_int, "clip_skip")
    fields["rng_source"] = RngSource.DEVICE
    take("RNG", lambda v: RngSource(v.strip()), "rng_source")
    # A1111 writes these only when on: "Face restoration: <model>", "Tiling: True"
    fields["restore_faces"] = bool(params.get("Face restoration", "").strip())
    fields["tiling"] = params.get("Tiling", "").strip().lower() == "true"
    if params.get("Model", "").strip():
        fields["checkpoint"] = params["Model"].strip()
    elif params.get("Model hash", "").strip():
        fields["checkpoint"] = params["Model hash"].strip()
    if params.get("VAE", "").strip():
        fields["vae"] = params["VAE"].strip()

    if "Denoising strength" in params and any(key in params for key in _HIRES_KEYS):
        fields["hires"] = _hires_fields(params, strict)

    if any(key in params for key in _INPAINT_KEYS):
        inpaint: dict[str, object] = {
            "mask_blur": 4,
            "masked_content": MaskedContent.ORIGINAL,
            "inpaint_area": InpaintArea.WHOLE_PICTURE,
            "only_masked_padding": 32,
            "invert_mask": params.get("Mask mode", "").strip() == _INVERT_MASK_MODE,
        }
        take("Mask blur", _to_int, "mask_blur", into=inpaint)
        take("Masked content", lambda v: MaskedContent(v.strip()), "masked_content", into=inpaint)
        take("Inpaint area", lambda v: InpaintArea(v.strip()), "inpaint_area", into=inpaint)
        take("Masked area padding", _to_int, "only_masked_padding", into=inpaint)
        fields["inpaint_options"] = inpaint
    return fields


def _hires_fields(params: dict[str, str], strict: bool) -> dict[str, object]:
    """HiresOptions field values from A1111's "Hires ..." keys; an absent key is A1111's default
    (scale 2, no resize, the first pass's steps, sampler, schedule, prompts and CFG)."""
    hires: dict[str, object] = {"scale": 2.0, "resize_x": 0, "resize_y": 0, "upscaler": "Latent",
                                "second_pass_steps": 0, "sampler_name": None, "scheduler": None,
                                "prompt": "", "negative_prompt": "", "cfg_scale": None}
    readers = (("Hires upscale", _to_float, ("scale",)), ("Hires resize", _to_size, ("resize_x", "resize_y")),
               ("Hires upscaler", str.strip, ("upscaler",)), ("Hires steps", _to_int, ("second_pass_steps",)),
               ("Hires sampler", str.strip, ("sampler_name",)), ("Hires schedule type", str.strip, ("scheduler",)),
               ("Hires prompt", str, ("prompt",)), ("Hires negative prompt", str, ("negative_prompt",)),
               ("Hires CFG Scale", _to_float, ("cfg_scale",)))
    for key, convert, targets in readers:
        if key not in params:
            continue
        try:
            value = convert(params[key])
        except (ValueError, TypeError) as err:
            if strict:
                raise ValueError(f"infotext {key!r}: cannot read {params[key]!r}: {err}") from err
            continue
        hires.update(zip(targets, value) if len(targets) > 1 else {targets[0]: value})
    return hires


# ---------------------------------------------------------------------------------------------
# images


def _decode_user_comment(raw: Any) -> str:
    """EXIF UserComment: an 8-byte character code, then the text. A1111 (piexif) writes
    b"UNICODE\\0" and UTF-16 big-endian; other tools write little-endian, so guess from the
    zero bytes when there is no byte order mark."""
    if isinstance(raw, str):
        return raw.rstrip("\x00")
    if not isinstance(raw, (bytes, bytearray)):
        return ""
    raw = bytes(raw)
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\x00":
        if body.startswith(b"\xfe\xff"):
            text = body[2:].decode("utf-16-be", errors="replace")
        elif body.startswith(b"\xff\xfe"):
            text = body[2:].decode("utf-16-le", errors="replace")
        else:
            zeros_even = sum(1 for b in body[0::2] if b == 0)
            zeros_odd = sum(1 for b in body[1::2] if b == 0)
            codec = "utf-16-le" if zeros_odd > zeros_even else "utf-16-be"
            text = body[: len(body) - len(body) % 2].decode(codec, errors="replace")
    elif prefix == b"ASCII\x00\x00\x00" or prefix == b"\x00" * 8:
        text = body.decode("utf-8", errors="ignore")
    elif prefix == b"JIS\x00\x00\x00\x00\x00":
        text = body.decode("shift_jis", errors="ignore")
    else:
        text = raw.decode("utf-8", errors="ignore")
    return text.rstrip("\x00")


def read_infotext(image: Image.Image) -> Optional[str]:
    """The infotext stored in an image: PNG "parameters" text, else EXIF UserComment."""
    value = image.info.get(INFOTEXT_KEY)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="ignore")
    if isinstance(value, str) and value:
        return str(value)
    try:
        exif = image.getexif()
        comment = exif.get_ifd(EXIF_IFD_POINTER).get(EXIF_USER_COMMENT)
    except Exception:  # a broken EXIF block is "no infotext", not a crash in PNG Info
        return None
    text = _decode_user_comment(comment) if comment is not None else ""
    return text or None


def user_comment_exif(text: str) -> bytes:
    """EXIF bytes holding `text` as UserComment the way A1111 writes it (piexif, "unicode"):
    b"UNICODE\\0" followed by UTF-16 big-endian. Pass to PIL's save(..., exif=...)."""
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD_POINTER)[EXIF_USER_COMMENT] = b"UNICODE\x00" + text.encode("utf-16-be")
    return exif.tobytes()
