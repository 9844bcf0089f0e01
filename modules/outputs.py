"""Saving generated images the way A1111 lays them out, safely.

    outputs/txt2img-images/2024-05-01/00000-1234.png     (img2img and inpaint: img2img-images)
    outputs/txt2img-grids/2024-05-01/grid-0000.png

The number is one more than the highest number already in the folder, so a folder keeps counting
across restarts. Names come from A1111's filename patterns ("[seed]", "[prompt_words]", ...);
every piece that comes from a prompt is sanitized, so no prompt can leave the outputs folder or
make a name the file system refuses. Files are written to a temporary name in the same folder and
moved into place with os.replace, so a crash never leaves a half-written image under a real name.
The infotext goes into the PNG "parameters" chunk or, for JPEG and WEBP, EXIF UserComment
(modules/image_files.py); pattern tokens read the image's structured parameters, never the text.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
import re
import string
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from PIL import Image

from modules.atomic_write import write_bytes_atomic
from modules.generation.result import ImageParams
from modules.image_files import FORMATS, encode_image
from modules.infotext import format_number, generation_params

if TYPE_CHECKING:
    from modules.generation.request import GenerationRequest

MAX_PART_CHARS = 128  # A1111's max_filename_part_length: one token's text in a name
MAX_NAME_BYTES = 200  # a whole file or folder name, UTF-8; file systems allow 255
MAX_SEQUENCE_TRIES = 500  # as A1111: numbers tried past the highest one found

_INVALID_CHARS = '<>:"/\\|?*'
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}
_NONLETTERS = re.compile(r"[\s" + re.escape(string.punctuation) + r"]+")
_TOKEN = re.compile(r"\[([^\[\]]+)\]")
_TOKEN_ARG = re.compile(r"(.*)<([^>]*)>$")
_KIND = re.compile(r"[a-z0-9][a-z0-9_\-]*")
_DEFAULT_DATETIME_FORMAT = "%Y%m%d%H%M%S"

# One lock for the whole process: choosing a number and moving the file into place happen under
# it, so two jobs saving into one folder never take the same number.
_SAVE_LOCK = threading.Lock()


@dataclass(frozen=True)
class SaveSettings:
    """A1111's "Saving images/grids" and "Paths for saving" settings that matter here.

    Empty `outdir_samples` / `outdir_grids` mean `<outputs>/<kind>-images` and
    `<outputs>/<kind>-grids`; a relative folder is taken inside the outputs folder.
    """

    outdir_samples: str = ""
    outdir_grids: str = ""
    samples_format: str = "png"
    grid_format: str = "png"
    filename_pattern: str = "[seed]"  # A1111's samples_filename_pattern; "" means "[seed]"
    save_to_dirs: bool = True  # images into a subfolder named by directories_filename_pattern
    grid_save_to_dirs: bool = True
    directories_filename_pattern: str = "[date]"
    directories_max_prompt_words: int = 8
    grid_save: bool = True
    grid_extended_filename: bool = False  # "grid-0000-[pattern].png" instead of "grid-0000.png"
    grid_only_if_multiple: bool = True  # for the caller: no grid for a single image
    jpeg_quality: int = 80  # JPEG and lossy WEBP
    webp_lossless: bool = False
    enable_pnginfo: bool = True  # write the infotext into the file
    save_txt: bool = False  # also write the infotext to a .txt file beside the image

    def __post_init__(self) -> None:
        for name in ("samples_format", "grid_format"):
            value = getattr(self, name)
            if value.lower() not in FORMATS:
                raise ValueError(f"{name} must be one of {sorted(FORMATS)}, got {value!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be between 1 and 100, got {self.jpeg_quality}")
        if self.directories_max_prompt_words < 1:
            raise ValueError("directories_max_prompt_words must be at least 1")


# ---------------------------------------------------------------------------------------------
# names


def sanitize_filename_part(text: str, *, replace_spaces: bool = False, max_chars: int = MAX_PART_CHARS) -> str:
    """One piece of a file name, safe on every common file system.

    Path separators, characters Windows forbids, control characters (NUL and newlines included)
    and runs of dots become "_"; leading spaces/dots and trailing spaces/dots go; the text is cut
    to `max_chars`. May return "" (the caller decides what an empty piece means).
    """
    text = unicodedata.normalize("NFC", str(text))
    out = []
    for ch in text:
        if ch in _INVALID_CHARS or unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):
            out.append("_")
        elif replace_spaces and ch == " ":
            out.append("_")
        else:
            out.append(ch)
    text = re.sub(r"\.{2,}", "_", "".join(out))
    text = text.lstrip(" .")[:max_chars]
    return text.rstrip(" .")


def _fit_name(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """Cut `name` to `max_bytes` of UTF-8 without splitting a character; never "." or ".."."""
    encoded = name.encode("utf-8")
    if len(encoded) > max_bytes:
        name = encoded[:max_bytes].decode("utf-8", errors="ignore")
    name = name.rstrip(" .")
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = "_" + name
    return name


@dataclass
class _Tokens:
    seed: Optional[int]
    prompt: str
    width: int
    height: int
    params: Mapping[str, str]
    max_prompt_words: int
    extra: Mapping[str, object]
    now: _dt.datetime

    def value(self, name: str, args: list[str]) -> object:
        """The text for [name<args>]; None = unknown token, _SKIP = drop it and the text before."""
        key = name.lower()
        if key in self.extra:
            value = self.extra[key]
            return _SKIP if value is None else sanitize_filename_part(str(value))
        p = self.params
        simple = {
            "seed": "" if self.seed is None else str(self.seed),
            "width": str(self.width),
            "height": str(self.height),
            "sampler": p.get("Sampler", ""),
            "steps": p.get("Steps", ""),
            "cfg": p.get("CFG scale", ""),
            "clip_skip": p.get("Clip skip", "1"),
            "model_name": p.get("Model", ""),
            "model_hash": p.get("Model hash", ""),
            "vae_filename": p.get("VAE", ""),
            "date": self.now.strftime("%Y-%m-%d"),
            "prompt_hash": hashlib.sha256(self.prompt.encode("utf-8", "surrogatepass")).hexdigest()[:8],
        }
        if key in simple:
            return sanitize_filename_part(simple[key])
        if key == "denoising":
            value = p.get("Denoising strength")
            return _SKIP if not value else sanitize_filename_part(value)
        if key == "prompt":
            return sanitize_filename_part(self.prompt, replace_spaces=True)
        if key == "prompt_spaces":
            return sanitize_filename_part(self.prompt)
        if key == "prompt_words":
            words = [w for w in _NONLETTERS.split(self.prompt) if w] or ["empty"]
            return sanitize_filename_part(" ".join(words[: self.max_prompt_words]))
        if key == "datetime":
            return sanitize_filename_part(self._datetime(args))
        return None

    def _datetime(self, args: list[str]) -> str:
        fmt = args[0] if args and args[0] else _DEFAULT_DATETIME_FORMAT
        moment = self.now
        if len(args) > 1:
            try:
                from zoneinfo import ZoneInfo

                moment = moment.astimezone(ZoneInfo(args[1]))
            except Exception:  # unknown zone: local time, as A1111
                pass
        try:
            return moment.strftime(fmt)
        except (ValueError, TypeError):
            return moment.strftime(_DEFAULT_DATETIME_FORMAT)


_SKIP = object()


def apply_pattern(pattern: str, tokens: _Tokens) -> str:
    """Replace [token] and [token<arg>...] as A1111's FilenameGenerator does; unknown tokens stay
    as written. Token values are sanitized; the literal text is the caller's to sanitize."""
    out = []
    pos = 0
    for match in _TOKEN.finditer(pattern):
        text = pattern[pos:match.start()]
        pos = match.end()
        name, args = match.group(1), []
        while (arg_match := _TOKEN_ARG.match(name)) is not None:
            name, arg = arg_match.groups()
            args.insert(0, arg)
        value = tokens.value(name, args)
        if value is _SKIP:
            continue
        out.append(text + (match.group(0) if value is None else str(value)))
    out.append(pattern[pos:])
    return "".join(out)


def pattern_values(params: Optional[ImageParams], request: Optional["GenerationRequest"]) -> dict[str, str]:
    """The infotext's parameters by key, as text ("Steps": "20", "CFG scale": "7.5"), from the
    structured record the infotext is rendered from; {} without one."""
    if params is None:
        return {}
    if request is None:
        raise ValueError("save_image: params need the request they belong to (steps, CFG, ...)")
    return {key: format_number(value) for key, value in generation_params(request, params).items()}


def next_sequence_number(folder: Path, basename: str = "") -> int:
    """One more than the highest number that starts a name in `folder` (after "basename-"),
    0 for an empty or missing folder. "00007-1234.png" → 8."""
    prefix = f"{basename}-" if basename else ""
    highest = -1
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    for name in names:
        if not name.startswith(prefix) or name.startswith("."):
            continue
        head = os.path.splitext(name[len(prefix):])[0].split("-")[0]
        if head.isdigit() and head.isascii():
            highest = max(highest, int(head))
    return highest + 1


def _kind_folder(kind: str, is_grid: bool) -> str:
    if _KIND.fullmatch(kind) is None:
        raise ValueError(f"kind must be lowercase letters, digits, '-' or '_', got {kind!r}")
    if kind == "inpaint":
        kind = "img2img"
    return f"{kind}-grids" if is_grid else f"{kind}-images"


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# public


def save_image(
    image: Image.Image,
    *,
    kind: str,
    seed: int,
    prompt: str,
    infotext: str,
    settings: SaveSettings,
    base_dir: Path,
    is_grid: bool = False,
    params: Optional[ImageParams] = None,
    request: Optional["GenerationRequest"] = None,
    extra_tokens: Optional[Mapping[str, object]] = None,
    now: Optional[_dt.datetime] = None,
    chunks: Optional[Mapping[str, str]] = None,
    forced_name: Optional[str] = None,
) -> Path:
    """Save one image (or a grid) and return its path.

    `kind` picks the folder ("txt2img", "img2img", "inpaint" → img2img, "extras", ...). Tokens
    such as [sampler], [steps], [cfg], [model_name] and [model_hash] come from the image's `params`
    and its `request` (the values its `infotext` was rendered from; without them those tokens are
    empty); `extra_tokens` adds or overrides tokens (lowercase names; a None value drops the token and
    the literal text before it, like A1111's [batch_number] for a batch of one). `now` fixes
    the clock for [date]/[datetime]. `chunks`: more PNG text chunks (image_files.encode_image).
    `forced_name`: A1111's forced_filename (Extras' "use original name"): the file is named
    `<forced_name>.<ext>`, sanitized, with no number, and replaces a file of that name. Raises
    ValueError when the final path would fall outside the chosen output folder.
    """
    base_dir = Path(base_dir)
    now = now or _dt.datetime.now()
    fmt_name = (settings.grid_format if is_grid else settings.samples_format).lower()
    encoded = encode_image(image, fmt_name, infotext if settings.enable_pnginfo else "",
                           quality=settings.jpeg_quality, webp_lossless=settings.webp_lossless,
                           chunks=chunks if settings.enable_pnginfo else None)
    extension = encoded.extension  # png when too large for the format, as A1111

    outdir = settings.outdir_grids if is_grid else settings.outdir_samples
    root = Path(outdir) if outdir else Path(_kind_folder(kind, is_grid))
    if not root.is_absolute():
        root = base_dir / root
    root = Path(os.path.abspath(root))

    tokens = _Tokens(
        seed=seed,
        prompt=prompt or "",
        width=image.width,
        height=image.height,
        params=pattern_values(params, request),
        max_prompt_words=settings.directories_max_prompt_words,
        extra={str(k).lower(): v for k, v in (extra_tokens or {}).items()},
        now=now,
    )

    folder = root
    if settings.grid_save_to_dirs if is_grid else settings.save_to_dirs:
        subdir = apply_pattern(settings.directories_filename_pattern or "[prompt_words]", tokens)
        for part in re.split(r"[\\/]+", subdir):
            part = _fit_name(sanitize_filename_part(part, max_chars=MAX_NAME_BYTES))
            if part:
                folder = folder / part

    basename = "grid" if is_grid else ""
    if is_grid and not settings.grid_extended_filename:
        decoration = ""
    else:
        decoration = sanitize_filename_part(
            apply_pattern(settings.filename_pattern or "[seed]", tokens), max_chars=MAX_NAME_BYTES
        )

    if not _inside(Path(os.path.abspath(folder)), root):
        raise ValueError(f"refusing to save outside {root}: {folder}")
    with _SAVE_LOCK:
        folder.mkdir(parents=True, exist_ok=True)
        if not _inside(Path(os.path.realpath(folder)), Path(os.path.realpath(root))):
            raise ValueError(f"refusing to save outside {root}: {folder} leads elsewhere")
        forced = _fit_name(sanitize_filename_part(forced_name or ""), MAX_NAME_BYTES - len(extension) - 1)
        name = f"{forced}.{extension}" if forced else None
        start = next_sequence_number(folder, basename)
        tries = MAX_SEQUENCE_TRIES if name is None else 0  # a forced name takes no number
        for number in range(start, start + tries):
            stem = f"{number:05}" if not basename else f"{basename}-{number:04}"
            suffix = f".{extension}"
            room = MAX_NAME_BYTES - len(stem.encode()) - len(suffix.encode()) - 1
            deco = _fit_name(decoration, room) if decoration else ""
            candidate = f"{stem}-{deco}{suffix}" if deco else f"{stem}{suffix}"
            if not (folder / candidate).exists():
                name = candidate
                break
        if name is None:
            raise RuntimeError(f"no free file name in {folder} after {MAX_SEQUENCE_TRIES} tries")
        final = Path(os.path.abspath(folder / name))
        if final.parent != Path(os.path.abspath(folder)) or not _inside(final, root):
            raise ValueError(f"refusing to save outside {root}: {final}")
        path = write_bytes_atomic(folder / name, encoded.data)
        if settings.save_txt and infotext:
            write_bytes_atomic(folder / (os.path.splitext(name)[0] + ".txt"), f"{infotext}\n".encode("utf-8"))
    return path


def make_grid(images: Sequence[Image.Image], rows: Optional[int] = None) -> Image.Image:
    """A1111's image_grid: tiles the size of the first image on a black RGB canvas, filled row
    by row; `rows` defaults to round(sqrt(n)) (A1111's default, n_rows = -1)."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    n = len(images)
    if rows is None:
        rows = round(math.sqrt(n))
    rows = max(1, min(int(rows), n))
    cols = math.ceil(n / rows)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), color="black")
    for i, img in enumerate(images):
        if img.mode != "RGB":
            img = img.convert("RGB")
        grid.paste(img, box=(i % cols * w, i // cols * h))
    return grid
