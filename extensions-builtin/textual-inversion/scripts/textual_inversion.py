"""Textual inversion, A1111's way, on the typed hook API.

Embedding files live in the data folder's ``embeddings/`` and ``--embeddings-dir`` (recursively).
The trigger word is the file name's stem; wherever its tokens appear in a prompt or a negative
prompt (with emphasis too), the text encoder gets the embedding's vectors in their place. Each job
scans the folders (changed files are read again), builds an `EmbeddingTable` of those that fit the
job's model, and hands it to the engine's conditioning through `JobState.embeddings`; the encoder's
cache keys on the table's identity (file hashes), so new vectors never meet an old encoding.

Also here: ``TI hashes`` in infotext, Extra Networks cards, and the A1111 routes ``GET /embeddings``,
``POST /refresh-embeddings`` and ``GET /hypernetworks`` (listed only: hypernetworks are not applied).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import BaseModel

from modules.extensions.hooks import ExtensionEnvironment, JobExtension, NetworkCard
from modules.processing.conditioning import EmbeddingTable, PromptEmbedding
from ti_files import EmbeddingFile
from ti_library import EmbeddingLibrary, LibraryView, hypernetwork_files, preview_of

CARD_KIND = "Textual Inversion"
INFOTEXT_KEY = "TI hashes"


class TextualInversion(JobExtension):
    name = "textual-inversion"
    title = "Textual Inversion"
    always_on = True  # a trigger word may be in any prompt
    sort_order = -100  # before extensions that read the conditioning

    def __init__(self) -> None:
        self.library = EmbeddingLibrary([])
        self.hypernetwork_dir: Optional[Path] = None
        # The text-encoder widths of the model the last job ran on: what "skipped" is measured
        # against in /embeddings (before any job: unknown, everything is listed as loaded).
        self._model_widths: tuple[int, ...] = ()

    # ---- app level
    def setup(self, env: ExtensionEnvironment) -> None:
        data_dir = Path(env.paths.data_dir)
        folders = [data_dir / "embeddings"]
        extra = getattr(env.args, "embeddings_dir", None)
        if extra:
            folders.append(Path(extra))
        self.library = EmbeddingLibrary(folders)
        hyper = getattr(env.args, "hypernetwork_dir", None)
        self.hypernetwork_dir = Path(hyper) if hyper else data_dir / "models" / "hypernetworks"
        self.library.scan()

    def refresh(self) -> None:
        self.library.refresh()

    def network_cards(self) -> list[NetworkCard]:
        return [_card(f) for f in self.library.scan().files.values()]

    def api_router(self):
        from fastapi import APIRouter

        from modules.api import schemas

        router = APIRouter()

        @router.get("/embeddings", response_model=schemas.EmbeddingsResponse)
        def embeddings():
            return self.embeddings_response(self.library.scan())

        @router.post("/refresh-embeddings")
        def refresh_embeddings():
            self.refresh()
            return {}

        @router.get("/hypernetworks", response_model=list[HypernetworkItem])
        def hypernetworks():
            folder = self.hypernetwork_dir
            return [HypernetworkItem(name=p.stem, path=str(p)) for p in hypernetwork_files(folder)] if folder else []

        return router

    def embeddings_response(self, view: LibraryView):
        from modules.api import schemas

        loaded, skipped = view.split(self._model_widths)

        def items(files: dict[str, EmbeddingFile]) -> dict[str, schemas.EmbeddingItem]:
            return {n: schemas.EmbeddingItem(step=f.step, sd_checkpoint=f.sd_checkpoint,
                                             sd_checkpoint_name=f.sd_checkpoint_name, shape=f.shape,
                                             vectors=f.count) for n, f in files.items()}

        return schemas.EmbeddingsResponse(loaded=items(loaded), skipped=items(skipped))

    # ---- job hooks
    def patch_model(self, job, args: BaseModel):
        """Runs once the job's model is final (after every `process` hook): the table is for it.
        Nothing to undo: the vectors go into the encoding, not into the model."""
        widths = text_encoder_widths(job.model)
        self._model_widths = widths
        loaded, _ = self.library.scan().split(widths)
        job.embeddings = EmbeddingTable([PromptEmbedding(f.name, f.vectors, f.sha256)
                                         for f in loaded.values()]) if loaded else None
        job.extension_data[self.name] = {}  # name -> short hash of the embeddings the prompts used
        return None

    def after_batch(self, job, batch, args: BaseModel) -> None:
        if job.embeddings is None:
            return
        used: dict[str, str] = job.extension_data.setdefault(self.name, {})
        for schedule in (batch.cond, batch.uncond):
            for name in (schedule.embeddings_used if schedule is not None else ()):
                used[name] = str(job.embeddings.by_name[name].identity)[:12]  # identity: the file's sha256
        if used and getattr(job.options, "textual_inversion_add_hashes_to_infotext", True):
            # A1111 drops ':' and ',' from the names so the list parses back
            job.extra_params[INFOTEXT_KEY] = ", ".join(
                f"{name.replace(':', '').replace(',', '')}: {short}" for name, short in sorted(used.items()))


class HypernetworkItem(BaseModel):
    """A1111's /sdapi/v1/hypernetworks item."""

    name: str
    path: Optional[str] = None


def text_encoder_widths(model) -> tuple[int, ...]:
    """The token-embedding width of each of the model's text encoders, in the encoder's order."""
    pipe = model.pipe
    encoders = [getattr(pipe, n, None) for n in ("text_encoder", "text_encoder_2")]
    return tuple(int(e.get_input_embeddings().embedding_dim) for e in encoders if e is not None)


def _card(f: EmbeddingFile) -> NetworkCard:
    return NetworkCard(kind=CARD_KIND, name=f.name, prompt_text=f.name, path=str(f.path), preview=preview_of(f.path),
                       description="", metadata={"vectors": f.count, "shape": f.shape, "step": f.step,
                                                 "sd_checkpoint_name": f.sd_checkpoint_name},
                       search_terms=(f.name, str(f.path)))
