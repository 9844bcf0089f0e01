"""Request and response models of the A1111-compatible HTTP API (/sdapi/v1).

Field names and defaults are A1111's, so existing clients work unchanged. Two deliberate
differences, both documented on the fields:

* `width` / `height` default to None, meaning the active model's native size (A1111 always
  defaults to 512, which is wrong for a model trained at another size);
* unknown fields are accepted, as in A1111, but each one is reported in `info.warnings` instead
  of vanishing silently.

Range checks live in `GenerationRequest`, the one request type; `service.py` maps its errors
back onto the names used here, so a 422 always names the field the client sent.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from modules.generation.request import MAX_PROMPT_CHARS
from modules.postprocess.extras import ExtrasRequest

# A task id travels in URLs (?task_id=) and logs: short, and printable ASCII without spaces/quotes
MAX_TASK_ID_CHARS = 128
TASK_ID_PATTERN = r"^[A-Za-z0-9_.:()\[\]{}@+=#-]*$"
MAX_INFOTEXT_CHARS = 4 * MAX_PROMPT_CHARS  # a prompt, a negative prompt and the parameters

def clean_name(value: Any) -> Optional[str]:
    """A name field as clients send it: None, "" and whitespace mean "not given"."""
    return None if value is None or str(value).strip() == "" else str(value).strip()


# ---------------------------------------------------------------------------------------------
# generation requests


class _GenerationBase(BaseModel):
    """Fields txt2img and img2img share (A1111's StableDiffusionProcessing)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    prompt: Optional[str] = Field("", max_length=MAX_PROMPT_CHARS)
    negative_prompt: Optional[str] = Field("", max_length=MAX_PROMPT_CHARS)
    styles: Optional[list[str]] = Field(None, description="Names of styles from styles.csv")
    seed: int = Field(-1, description="-1 = random")
    subseed: int = Field(-1, description="Variation seed; -1 = random")
    subseed_strength: float = 0.0
    seed_resize_from_h: int = Field(-1, description="-1 or 0 = off")
    seed_resize_from_w: int = Field(-1, description="-1 or 0 = off")
    sampler_name: Optional[str] = Field(None, description="A1111 sampler name; see /sdapi/v1/samplers")
    sampler_index: Optional[str] = Field("Euler", description="Used when sampler_name is not given (A1111)")
    scheduler: Optional[str] = Field(None, description="Schedule type; see /sdapi/v1/schedulers")
    batch_size: int = 1
    n_iter: int = Field(1, description="Batch count")
    steps: int = 50
    cfg_scale: float = 7.0
    width: Optional[int] = Field(None, description="Default: the active model's native size")
    height: Optional[int] = Field(None, description="Default: the active model's native size")
    restore_faces: Optional[bool] = None
    tiling: Optional[bool] = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: Optional[float] = None
    denoising_strength: Optional[float] = Field(None, description="txt2img: for hires fix; still checked 0..1")
    s_min_uncond: Optional[float] = None
    s_churn: Optional[float] = None
    s_tmax: Optional[float] = None
    s_tmin: Optional[float] = None
    s_noise: Optional[float] = None
    override_settings: Optional[dict[str, Any]] = Field(
        None, description="Settings for this request only, e.g. sd_model_checkpoint, sd_vae, "
                          "CLIP_stop_at_last_layers, randn_source")
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: Optional[str] = None
    refiner_switch_at: Optional[float] = None
    disable_extra_networks: bool = False
    firstpass_image: Optional[str] = None
    comments: Optional[dict[str, Any]] = None
    force_task_id: Optional[str] = Field(None, max_length=MAX_TASK_ID_CHARS, pattern=TASK_ID_PATTERN,
                                         description="Task id to use; read progress with it")
    infotext: Optional[str] = Field(None, max_length=MAX_INFOTEXT_CHARS,
                                    description="A1111 infotext; fills the fields not sent")
    script_name: Optional[str] = None
    script_args: Optional[list[Any]] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: Optional[dict[str, Any]] = Field(default_factory=dict)


class Txt2ImgRequest(_GenerationBase):
    model_config = ConfigDict(title="StableDiffusionProcessingTxt2Img", extra="allow")

    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: Optional[str] = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: Optional[str] = None
    hr_sampler_name: Optional[str] = None
    hr_scheduler: Optional[str] = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_cfg: Optional[float] = Field(None, description="Hires CFG scale (Forge's field); None = cfg_scale")


class Img2ImgRequest(_GenerationBase):
    model_config = ConfigDict(title="StableDiffusionProcessingImg2Img", extra="allow")

    init_images: Optional[list[str]] = Field(None, description="Base64 images (data: URLs accepted)")
    resize_mode: int = Field(0, description="0 just resize, 1 crop and resize, 2 resize and fill")
    denoising_strength: float = 0.75
    image_cfg_scale: Optional[float] = None
    mask: Optional[str] = Field(None, description="Base64 mask, white = repaint; makes this an inpaint job")
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: Optional[int] = Field(None, description="Overrides mask_blur_x/mask_blur_y")
    mask_round: bool = True
    inpainting_fill: int = Field(0, description="0 fill, 1 original, 2 latent noise, 3 latent nothing")
    inpaint_full_res: bool = Field(True, description="True = only masked, False = whole picture")
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = Field(0, description="1 = repaint what the mask leaves black")
    initial_noise_multiplier: Optional[float] = None
    latent_mask: Optional[str] = None
    include_init_images: bool = Field(False, description="Echo init_images and mask in `parameters`")


class GenerationResponse(BaseModel):
    images: Optional[list[str]] = Field(None, description="The generated images, base64")
    parameters: dict[str, Any]
    info: str = Field(description="JSON string: seeds, prompts, infotexts, size, sampler, ...")


class TextToImageResponse(GenerationResponse):
    pass


class ImageToImageResponse(GenerationResponse):
    pass


# ---------------------------------------------------------------------------------------------
# png info, progress


class PNGInfoRequest(BaseModel):
    image: str = Field(description="The base64 encoded image")


class PNGInfoResponse(BaseModel):
    info: str = Field(description="The infotext the image carries ('' when none)")
    items: dict[str, Any] = Field(description="The image's other text fields")
    parameters: dict[str, Any] = Field(description="The infotext taken apart, A1111 keys")


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class ProgressResponse(BaseModel):
    progress: float = Field(description="0..1 over the whole job")
    eta_relative: float = Field(description="Seconds left (estimate)")
    state: ProgressState
    current_image: Optional[str] = Field(None, description="Live preview, base64 PNG")
    textinfo: Optional[str] = None
    # beyond A1111: a task's own progress, asked for with ?task_id=
    task_id: Optional[str] = Field(None, description="The task this progress is for")
    status: Optional[str] = Field(None, description="queued, running, done or failed")
    queue_position: Optional[int] = Field(
        None, description="0 running, n = n jobs ahead of it, -1 finished; with ?task_id= only")
    queue_pending: int = Field(0, description="Jobs waiting in the queue")


# ---------------------------------------------------------------------------------------------
# lists


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: Optional[list[str]] = None
    default_rho: Optional[float] = None
    need_inner_model: Optional[bool] = None


class UpscalerItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    model_name: Optional[str] = None
    model_path: Optional[str] = None
    model_url: Optional[str] = None
    scale: Optional[float] = None


class LatentUpscalerModeItem(BaseModel):
    name: str


class RealesrganItem(BaseModel):
    name: str
    path: Optional[str] = Field(None, description="Where the release is published (fetch it by hand: nothing "
                                                  "is downloaded here)")
    scale: Optional[int] = None
    # beyond A1111: where the file is, or where to put it, and whether it is there and usable
    local_path: Optional[str] = None
    installed: bool = False
    reason: Optional[str] = Field(None, description="Why a file at local_path cannot be used")


class SDModelItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    title: str
    model_name: str
    hash: Optional[str] = None
    sha256: Optional[str] = None
    filename: str
    config: Optional[str] = None


class SDVaeItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    filename: str


class FaceRestorerItem(BaseModel):
    name: str
    cmd_dir: Optional[str] = None


class PromptStyleItem(BaseModel):
    name: str
    prompt: Optional[str] = None
    negative_prompt: Optional[str] = None


class EmbeddingItem(BaseModel):
    step: Optional[int] = None
    sd_checkpoint: Optional[str] = None
    sd_checkpoint_name: Optional[str] = None
    shape: int
    vectors: int


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, EmbeddingItem] = Field(default_factory=dict)
    skipped: dict[str, EmbeddingItem] = Field(default_factory=dict)


class MemoryResponse(BaseModel):
    ram: dict[str, Any]
    cuda: dict[str, Any]


class ScriptsList(BaseModel):
    txt2img: list[str] = Field(default_factory=list)
    img2img: list[str] = Field(default_factory=list)


class ScriptArg(BaseModel):
    label: Optional[str] = None
    value: Optional[Any] = None
    minimum: Optional[Any] = None
    maximum: Optional[Any] = None
    step: Optional[Any] = None
    choices: Optional[list[str]] = None


class ScriptInfo(BaseModel):
    name: Optional[str] = None
    is_alwayson: Optional[bool] = None
    is_img2img: Optional[bool] = None
    args: list[ScriptArg] = Field(default_factory=list)


class ExtensionItem(BaseModel):
    name: str
    remote: str
    branch: str
    commit_hash: str
    version: str
    commit_date: str
    enabled: bool
    # beyond A1111: why it failed to install, import or load (None when it did not)
    error: Optional[str] = None


# ---------------------------------------------------------------------------------------------
# extras (A1111's ExtrasBaseRequest and friends); names, defaults and ranges are ExtrasRequest's


class ExtrasBaseRequest(ExtrasRequest):
    model_config = ConfigDict(title="ExtrasBaseRequest", extra="ignore", frozen=False)

    show_extras_results: bool = Field(True, description="Accepted; as in A1111, the images are returned either way")
    save_images: bool = Field(False, description="Beyond A1111 (whose API never saves Extras results): also "
                                                 "save them to outputs/extras-images")

    def extras_request(self) -> ExtrasRequest:
        return ExtrasRequest(**self.model_dump(include=set(ExtrasRequest.model_fields)))


class ExtrasSingleImageRequest(ExtrasBaseRequest):
    image: str = Field("", description="The image, base64 (data: URLs accepted)")


class FileData(BaseModel):
    data: str = Field(description="The image, base64")
    name: str = Field(description="File name")


class ExtrasBatchImagesRequest(ExtrasBaseRequest):
    imageList: list[FileData] = Field(description="The images to work on")


class ExtrasSingleImageResponse(BaseModel):
    html_info: str = Field(description="The postprocessing text as HTML")
    image: Optional[str] = Field(None, description="The result, base64")


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str = Field(description="The last image's postprocessing text as HTML")
    images: list[str] = Field(description="The results, base64, in the order sent")
