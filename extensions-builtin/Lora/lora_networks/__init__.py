"""The LoRA extension's helpers: files (library), formats and their math, model layer names,
and the per-batch weight patch. Imported whole by scripts/lora.py while the extension folder is on
sys.path (see modules/extensions/script_import.py)."""

from . import formats, layer_map, library, loading, tags, weight_patch  # noqa: F401
