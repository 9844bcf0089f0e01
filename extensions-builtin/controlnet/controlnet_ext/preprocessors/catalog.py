"""The table of modules: sd-webui-controlnet's names, UI labels, sliders (from its
preprocessor_sliders_config: names, defaults, ranges) and, for modules with weights, the files in
its downloads layout under models/ControlNet-annotators. No heavy imports: runs are looked up lazily."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from controlnet_ext.clip_vision_files import ENCODER_FILES, MODULE_ENCODERS
from controlnet_ext.preprocessors.types import ANNOTATORS, CLIP_VISION, Slider, WeightFile

RESOLUTION = Slider("Preprocessor Resolution", 512, 64, 2048, 1)
DEFAULT_RESOLUTION = 512   # what a module without a resolution slider is given (sd-webui-controlnet's)

ANNOTATORS_HF = "huggingface.co/lllyasviel/Annotators"
CONTROLNET_CKPTS_HF = "huggingface.co/lllyasviel/ControlNet (annotator/ckpts)"


def _annotator(relative: str, source: str = ANNOTATORS_HF) -> WeightFile:
    return WeightFile(ANNOTATORS, relative, source)


HED = _annotator("hed/ControlNetHED.pth")
SK_MODEL = _annotator("lineart/sk_model.pth")
SK_MODEL_COARSE = _annotator("lineart/sk_model2.pth")
MIDAS = _annotator("midas/dpt_hybrid-midas-501f0c75.pt", CONTROLNET_CKPTS_HF)
LERES = _annotator("leres/res101.pth")
LERES_PIX2PIX = _annotator("leres/latest_net_G.pth")
ZOE = _annotator("zoedepth/ZoeD_M12_N.pt")
NORMAL_BAE = _annotator("normal_bae/scannet.pt")
OPENPOSE_BODY = _annotator("openpose/body_pose_model.pth")
OPENPOSE_HAND = _annotator("openpose/hand_pose_model.pth")
OPENPOSE_FACE = _annotator("openpose/facenet.pth")
DWPOSE_DET = _annotator("openpose/yolox_l.onnx", "huggingface.co/yzd-v/DWPose")
DWPOSE_POSE = _annotator("openpose/dw-ll_ucoco_384.onnx", "huggingface.co/yzd-v/DWPose")
MLSD = _annotator("mlsd/mlsd_large_512_fp32.pth", CONTROLNET_CKPTS_HF)
PIDINET = _annotator("pidinet/table5_pidinet.pth")
UNIFORMER = _annotator("uniformer/upernet_global_small.pth", CONTROLNET_CKPTS_HF)
ONEFORMER_ADE20K = _annotator("oneformer/250_16_swin_l_oneformer_ade20k_160k.pth")
ONEFORMER_COCO = _annotator("oneformer/150_16_swin_l_oneformer_coco_100ep.pth")
LINEART_ANIME = _annotator("lineart_anime/netG.pth")
MANGA_LINE = _annotator("manga_line/erika.pth")
LAMA = _annotator("lama/ControlNetLama.pth")

CLIP_SOURCES = {
    "clip_h": "huggingface.co/h94/IP-Adapter (models/image_encoder), saved as clip_h.pth",
    "clip_g": "huggingface.co/lllyasviel/Annotators (clip_g.pth)",
}


def clip_vision_file(encoder: str) -> WeightFile:
    first, *others = ENCODER_FILES[encoder]
    return WeightFile(CLIP_VISION, first, CLIP_SOURCES.get(encoder, ""), tuple(others))


@dataclass(frozen=True)
class NetRun:
    """How a module with its own net runs: nets/<net>.py's <builder>() loaded from the first
    weight file, then <runner>(inp, net, **options)."""

    net: str
    builder: str
    runner: str
    options: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    label: Optional[str] = None                    # sd-webui-controlnet's UI alias, if it has one
    sliders: tuple[Optional[Slider], ...] = ()
    weights: tuple[WeightFile, ...] = ()
    model_free_run: Optional[str] = None            # function in model_free.py
    net_run: Optional[NetRun] = None                # None with weights = listed, not implemented here

    @property
    def aliases(self) -> tuple[str, ...]:
        return (self.label,) if self.label else ()


def _res(*sliders: Optional[Slider]) -> tuple[Optional[Slider], ...]:
    return (RESOLUTION, *sliders)


MODEL_FREE: tuple[ModuleSpec, ...] = (
    ModuleSpec("none", model_free_run="identity"),
    ModuleSpec("invert", "invert (from white bg & black line)", model_free_run="invert"),
    ModuleSpec("canny", sliders=_res(Slider("Canny Low Threshold", 100, 1, 255),
                                     Slider("Canny High Threshold", 200, 1, 255)), model_free_run="canny"),
    ModuleSpec("threshold", sliders=_res(Slider("Binarization Threshold", 127, 0, 255)), model_free_run="threshold"),
    ModuleSpec("scribble_xdog", sliders=_res(Slider("XDoG Threshold", 32, 1, 64)), model_free_run="scribble_xdog"),
    ModuleSpec("binary", sliders=_res(Slider("Binary threshold", 0, 0, 255)), model_free_run="binary"),
    ModuleSpec("blur_gaussian", sliders=_res(Slider("Sigma", 9.0, 0.01, 64.0, 0.01)), model_free_run="blur_gaussian"),
    ModuleSpec("tile_resample", sliders=(None, Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01)),
               model_free_run="tile_resample"),
    ModuleSpec("inpaint", "inpaint_global_harmonious", model_free_run="inpaint"),
    ModuleSpec("inpaint_only", model_free_run="inpaint"),
    ModuleSpec("shuffle", sliders=_res(), model_free_run="shuffle"),
    ModuleSpec("color", "t2ia_color_grid", sliders=_res(), model_free_run="color"),
    ModuleSpec("lineart_standard", "lineart_standard (from white bg & black line)", sliders=_res(),
               model_free_run="lineart_standard"),
)

_HED_RUN = NetRun("hed", "HedNet", "run_hed")
_SKETCH_RUN = NetRun("lineart", "SketchGenerator", "run_lineart")
_PIDINET_RUN = NetRun("pidinet", "PiDiNet", "run_pidinet")
_LERES_SLIDERS = _res(Slider("Remove Near %", 0, 0, 100, 0.1), Slider("Remove Background %", 0, 0, 100, 0.1))

WITH_WEIGHTS: tuple[ModuleSpec, ...] = (
    # implemented here
    ModuleSpec("hed", "softedge_hed", _res(), (HED,), net_run=_HED_RUN),
    ModuleSpec("hed_safe", "softedge_hedsafe", _res(), (HED,),
               net_run=NetRun("hed", "HedNet", "run_hed", (("safe", True),))),
    ModuleSpec("scribble_hed", None, _res(), (HED,), net_run=NetRun("hed", "HedNet", "run_scribble_hed")),
    ModuleSpec("lineart", "lineart_realistic", _res(), (SK_MODEL,), net_run=_SKETCH_RUN),
    ModuleSpec("lineart_coarse", None, _res(), (SK_MODEL_COARSE,), net_run=_SKETCH_RUN),
    ModuleSpec("pidinet", "softedge_pidinet", _res(), (PIDINET,), net_run=_PIDINET_RUN),
    ModuleSpec("pidinet_safe", "softedge_pidisafe", _res(), (PIDINET,),
               net_run=NetRun("pidinet", "PiDiNet", "run_pidinet", (("safe", True),))),
    ModuleSpec("pidinet_scribble", "scribble_pidinet", _res(), (PIDINET,),
               net_run=NetRun("pidinet", "PiDiNet", "run_scribble_pidinet")),
    ModuleSpec("pidinet_sketch", "t2ia_sketch_pidi", _res(), (PIDINET,),
               net_run=NetRun("pidinet", "PiDiNet", "run_pidinet", (("sketch", True),))),
    ModuleSpec("mlsd", None, _res(Slider("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01),
                                  Slider("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01)), (MLSD,),
               net_run=NetRun("mlsd", "MLSDNet", "run_mlsd")),
    ModuleSpec("lineart_anime", None, _res(), (LINEART_ANIME,),
               net_run=NetRun("lineart_anime", "AnimeLineUNet", "run_lineart_anime")),
    # listed with their files; no implementation in this build
    ModuleSpec("depth", "depth_midas", _res(), (MIDAS,)),
    ModuleSpec("depth_leres", None, _LERES_SLIDERS, (LERES,)),
    ModuleSpec("depth_leres++", None, _LERES_SLIDERS, (LERES, LERES_PIX2PIX)),
    ModuleSpec("depth_zoe", None, _res(), (ZOE,)),
    ModuleSpec("normal_map", "normal_midas", _res(Slider("Normal Background Threshold", 0.4, 0.0, 1.0, 0.01)),
               (MIDAS,)),
    ModuleSpec("normal_bae", None, _res(), (NORMAL_BAE,)),
    ModuleSpec("openpose", None, _res(), (OPENPOSE_BODY,)),
    ModuleSpec("openpose_hand", None, _res(), (OPENPOSE_BODY, OPENPOSE_HAND)),
    ModuleSpec("openpose_face", None, _res(), (OPENPOSE_BODY, OPENPOSE_FACE)),
    ModuleSpec("openpose_faceonly", None, _res(), (OPENPOSE_BODY, OPENPOSE_FACE)),
    ModuleSpec("openpose_full", None, _res(), (OPENPOSE_BODY, OPENPOSE_HAND, OPENPOSE_FACE)),
    ModuleSpec("dw_openpose_full", None, _res(), (DWPOSE_DET, DWPOSE_POSE)),
    ModuleSpec("segmentation", "seg_ufade20k", _res(), (UNIFORMER,)),
    ModuleSpec("oneformer_ade20k", "seg_ofade20k", _res(), (ONEFORMER_ADE20K,)),
    ModuleSpec("oneformer_coco", "seg_ofcoco", _res(), (ONEFORMER_COCO,)),
    ModuleSpec("lineart_anime_denoise", None, _res(), (MANGA_LINE,)),
    ModuleSpec("inpaint_only+lama", None, (), (LAMA,)),
)

IP_ADAPTER_LABELS = {"ip-adapter_clip_sd15": "ip-adapter_clip_h", "ip-adapter_clip_sdxl": "ip-adapter_clip_g"}

IP_ADAPTER: tuple[ModuleSpec, ...] = tuple(
    ModuleSpec(module, IP_ADAPTER_LABELS.get(module), (), (clip_vision_file(encoder),), model_free_run="identity")
    for module, encoder in MODULE_ENCODERS.items()
)

ALL_SPECS: tuple[ModuleSpec, ...] = MODEL_FREE + WITH_WEIGHTS + IP_ADAPTER
