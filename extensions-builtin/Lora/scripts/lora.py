"""LoRA and LyCORIS networks from prompt tags (`<lora:name:0.8>`, `<lyco:name:1>`), as A1111's
built-in Lora extension, on the typed hook API: `process_batch` merges the batch's LoRA set into
the text encoder(s) and UNet for that batch and puts the exact weights back afterwards.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel

from modules.extensions.hooks import ExtensionEnvironment, JobExtension, NetworkCard
from modules.paths import REPO_ROOT

from lora_networks.layer_map import LayerMap
from lora_networks.library import LoraFile, LoraLibrary
from lora_networks.loading import FittedLora, LoraFileCache, LoraProblem, fit
from lora_networks.tags import LoraUse, batch_uses
from lora_networks.weight_patch import Contribution, WeightPatcher

EMBEDDED_LORA_DIR = REPO_ROOT / "models" / "embedded" / "Lora"  # shipped with the repo, read-only
_HASH_SYMBOLS = str.maketrans("", "", ":,")  # A1111 drops these from names in "Lora hashes"


class LoraInfo(BaseModel):
    """One entry of GET /sdapi/v1/loras (A1111's fields)."""

    name: str
    alias: str
    path: str
    metadata: dict[str, Any]


class _ModelState:
    """What the extension keeps per loaded model: its layer names and its patch state."""

    def __init__(self, pipe: Any) -> None:
        self.layer_map = LayerMap(pipe)
        self.patcher = WeightPatcher()
        self.fitted: dict[Any, FittedLora] = {}  # by file identity


class LoraExtension(JobExtension):
    name = "lora"
    title = "LoRA"
    extra_network = "lora"
    extra_network_aliases = ("lyco",)
    always_on = True

    def __init__(self) -> None:
        self.library = LoraLibrary([EMBEDDED_LORA_DIR])
        self.files = LoraFileCache()
        self._models: "weakref.WeakKeyDictionary[Any, _ModelState]" = weakref.WeakKeyDictionary()

    # ---- app level
    def setup(self, env: ExtensionEnvironment) -> None:
        folders = [Path(env.paths.models_dir) / "Lora"]
        flag = getattr(env.args, "lora_dir", None)
        if flag:
            folders.append(Path(flag))
        folders.append(EMBEDDED_LORA_DIR)
        unique = list(dict.fromkeys(f.resolve() for f in folders))
        self.library = LoraLibrary(unique)
        self.library.refresh()

    def refresh(self) -> None:
        self.library.refresh()

    def network_cards(self) -> list[NetworkCard]:
        return [NetworkCard(kind="Lora", name=f.name, prompt_text=f"<lora:{f.name}:1>", path=str(f.path),
                            preview=f.preview, metadata=f.metadata,
                            search_terms=tuple(dict.fromkeys((f.relative, f.alias))))
                for f in self.library.files]

    def api_router(self) -> Any:
        from fastapi import APIRouter

        router = APIRouter()

        @router.get("/loras", response_model=list[LoraInfo], summary="LoRA files (A1111 fields)")
        def loras() -> list[LoraInfo]:
            return [LoraInfo(name=f.name, alias=f.alias, path=str(f.path), metadata=f.metadata)
                    for f in self.library.files]

        @router.post("/refresh-loras", summary="Scan the LoRA folders again")
        def refresh_loras() -> None:
            self.refresh()

        return router

    # ---- per batch
    def process_batch(self, job, batch, args: BaseModel):
        uses, warnings = batch_uses(batch.extra_networks)
        uses = [u for u in uses if not u.is_zero]  # weight 0 is the plain model: nothing to do
        if not uses:
            _warn(job, warnings)
            return None
        state = self._state(job.model)
        contributions: list[Contribution] = []
        signature: list[tuple] = []
        te_identity: list[tuple] = []
        hashes: dict[str, str] = job.extension_data.setdefault(self.name, {})
        for use in uses:
            try:
                item, fitted = self._fit(use, state, job.model)
            except LoraProblem as exc:
                warnings.append(str(exc))
                continue
            identity = self.files.get(item).identity
            if fitted.unmatched:
                warnings.append(f"LoRA {use.name} ({item.path.name}): {len(fitted.unmatched)} of its layers match "
                                f"nothing in the model and are left out (e.g. {fitted.unmatched[0]})")
            for target, layer in fitted.layers:
                weight = use.te if target.is_text_encoder else use.unet
                if weight != 0:
                    contributions.append(Contribution(target, layer, weight))
            signature.append((identity, use.te, use.unet))
            if use.te != 0 and fitted.touches_text_encoder:
                te_identity.append((identity, use.te))
            hashes[use.name.translate(_HASH_SYMBOLS)] = self.library.short_hash(item)
        _warn(job, warnings)
        if hashes:
            job.extra_params["Lora hashes"] = ", ".join(f"{k}: {v}" for k, v in hashes.items())
        if not contributions:
            return None
        if te_identity:  # conditioning cached for the plain text encoder must not be reused
            batch.text_encoder_state.append(("lora", tuple(te_identity)))
        return state.patcher.patched(tuple(signature), contributions)

    def _state(self, model) -> _ModelState:
        state = self._models.get(model.pipe)
        if state is None:
            state = _ModelState(model.pipe)
            self._models[model.pipe] = state
        return state

    def _fit(self, use: LoraUse, state: _ModelState, model) -> tuple[LoraFile, FittedLora]:
        item = self.library.find(use.name)
        if item is None:
            raise LoraProblem(f"LoRA not found: {use.name} (no such file in {self._folders_text()}); skipped")
        parsed = self.files.get(item)
        fitted = state.fitted.get(parsed.identity)
        if fitted is None:
            fitted = fit(item, parsed, state.layer_map, f"{model.name} ({model.family.value})")
            state.fitted = {k: v for k, v in state.fitted.items() if k.path != parsed.identity.path}
            state.fitted[parsed.identity] = fitted
        return item, fitted

    def _folders_text(self) -> str:
        return ", ".join(str(f) for f in self.library.folders) or "no LoRA folder"


def _warn(job, warnings: list[str]) -> None:
    for warning in warnings:
        if warning not in job.result.warnings:
            job.result.warnings.append(warning)
