"""Which model weights the diffusers engine uses, where they load from, and fetching them.

Three roles, each a Hugging Face Hub repo id or a local folder:

    text2img  a Stable Diffusion 1.x/2.x text-to-image pipeline folder (model_index.json, unet, vae,
              text_encoder, tokenizer, scheduler): the first view, and the denoiser of the zoom stack
    inpaint   a Stable Diffusion inpainting pipeline folder (9-channel UNet); it may also name a plain
              text-to-image checkpoint (4-channel UNet), which diffusers' inpainting pipeline drives by
              blending the known latents back at every step
    depth     a transformers depth-estimation model folder (config.json, preprocessor_config.json,
              weights): AutoModelForDepthEstimation / AutoImageProcessor

Defaults (checked to exist on the Hub; LucidDreamer's own default inpainting repo was taken down):

    text2img  stable-diffusion-v1-5/stable-diffusion-v1-5          (the SD 1.5 weights, official mirror
                                                                    of the removed runwayml repo)
    inpaint   stable-diffusion-v1-5/stable-diffusion-inpainting    (SD 1.5 inpainting, same mirror)
    depth     depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf   (metric z-depth in metres,
                                                                    Apache-2.0; the -Small-hf variant is
                                                                    a 100 MB alternative for small GPUs,
                                                                    -Indoor- for rooms)

Precedence, highest first: an explicit override (a request's "models" field or get_engine options),
the server's settings.Settings (``--text2img-model`` … flags, else ZOOMSCAPE_TEXT2IMG_MODEL,
ZOOMSCAPE_INPAINT_MODEL, ZOOMSCAPE_DEPTH_MODEL, read by settings.py only), the defaults. A model id
that names an existing folder is used as is; otherwise it is looked up under the model folder
(Settings.model_dir: ``--model-dir`` / ZOOMSCAPE_MODEL_DIR; DIR/<owner>/<name> or DIR/<name>), then
in the Hugging Face cache (HF_HOME / HF_HUB_CACHE, read locally: nothing here touches the network
except ``pull``). Every function takes the Settings to use (``settings=``); without one it uses
``Settings.from_env()``.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Optional

from .settings import DEFAULT_MODELS, ENV, MODEL_ENV, ROLES, Settings, SettingsError, resolve
from .wire.names import MAX_MODEL_CHARS

DEFAULTS = DEFAULT_MODELS  # {role: default model id}
ENV_VARS = MODEL_ENV       # {role: its ZOOMSCAPE_*_MODEL variable} (read by settings.py only)
MODEL_DIR_ENV = ENV["model_dir"]
MAX_ID_LENGTH = MAX_MODEL_CHARS
PULL_COMMAND = "zoomscape models pull --engine diffusers"

# What a role's folder must hold. Pipelines: these components each need a config and weights.
PIPELINE_COMPONENTS = ("unet", "vae", "text_encoder")
WEIGHT_SUFFIXES = (".safetensors", ".bin")

# What `pull` fetches (keeps multi-GB .ckpt, EMA and fp16 duplicates out of the cache).
PIPELINE_PATTERNS = ["model_index.json", "scheduler/*.json", "tokenizer/*", "feature_extractor/*.json",
                     "text_encoder/*.json", "text_encoder/model.safetensors",
                     "unet/*.json", "unet/diffusion_pytorch_model.safetensors",
                     "vae/*.json", "vae/diffusion_pytorch_model.safetensors"]
PIPELINE_PATTERNS_BIN = ["text_encoder/pytorch_model.bin", "unet/diffusion_pytorch_model.bin",
                         "vae/diffusion_pytorch_model.bin"]
DEPTH_PATTERNS = ["*.json", "*.safetensors"]
DEPTH_PATTERNS_BIN = ["*.json", "pytorch_model.bin"]


@dataclass(frozen=True)
class ModelLocation:
    """Where one role's model would load from.

    source: "local" (a folder: given, or under the model folder), "hf-cache", or "missing";
    path: the folder to pass to from_pretrained (None when missing); problem: why it is missing.
    """

    role: str
    model_id: str
    source: str
    path: Optional[str]
    problem: str = ""

    @property
    def available(self) -> bool:
        return self.source != "missing"

    def as_dict(self) -> dict:
        return {**asdict(self), "available": self.available}


class ModelSettingsError(ValueError):
    """An override names an unknown role or is not a usable model id (the message names the field)."""


# ------------------------------------------------------------------------------------ settings

def model_settings(overrides: Optional[Mapping[str, Optional[str]]] = None, *,
                   settings: Optional[Settings] = None) -> dict[str, str]:
    """{role: model id or path} for every role: overrides > settings (flags > environment) > DEFAULTS.

    overrides: e.g. a request's {"text2img", "inpaint", "depth"}; None or blank values fall through.
    Raises ModelSettingsError naming models.<role> for unknown roles or over-long ids.
    """
    try:
        return resolve(settings).with_models(overrides).models
    except SettingsError as exc:
        raise ModelSettingsError(str(exc)) from None


# ------------------------------------------------------------------------------------ locating

def folder_problem(path: Path, role: str) -> str:
    """Why folder path cannot serve as role's model ("" when it looks complete). Reads only files."""
    path = Path(path)
    if not path.is_dir():
        return f"{path} is not a folder"
    if role == "depth":
        for name in ("config.json", "preprocessor_config.json"):
            if not (path / name).is_file():
                return f"{path} has no {name}"
        if not _has_weights(path):
            return f"{path} has no weights (model.safetensors or pytorch_model.bin)"
        return ""
    if not (path / "model_index.json").is_file():
        return f"{path} has no model_index.json (not a diffusers pipeline folder)"
    for comp in PIPELINE_COMPONENTS:
        if not (path / comp / "config.json").is_file():
            return f"{path} has no {comp}/config.json"
        if not _has_weights(path / comp):
            return f"{path} has no {comp} weights"
    if not (path / "tokenizer").is_dir():
        return f"{path} has no tokenizer folder"
    return ""


def _has_weights(folder: Path) -> bool:
    return any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir() if p.is_file())


def _key_file(role: str) -> str:
    return "config.json" if role == "depth" else "model_index.json"


def _cached_folder(model_id: str, role: str, cache_dir=None) -> Optional[Path]:
    """The HF cache snapshot folder of repo model_id holding role's key file, or None (local read)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model_id, _key_file(role), cache_dir=cache_dir)
    except ValueError:  # HFValidationError: not a valid repo id
        return None
    return Path(found).parent if isinstance(found, str) else None


_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")


def _looks_like_repo_id(model_id: str) -> bool:
    """owner/name or name with the Hub's characters (letters, digits, - _ .)."""
    return bool(_REPO_ID.match(model_id)) and ".." not in model_id


def locate(role: str, model_id: str, *, local_dir=None, cache_dir=None,
           settings: Optional[Settings] = None) -> ModelLocation:
    """Where role's model_id loads from: an existing folder, the model folder (local_dir, else
    settings.model_dir) /<id>, or the HF cache."""
    if role not in ROLES:
        raise ModelSettingsError(f"models.{role}: unknown model role; known roles: {', '.join(ROLES)}")
    given = Path(model_id).expanduser()
    if given.is_dir() or given.is_absolute() or model_id.startswith((".", "~")):
        problem = folder_problem(given, role) if given.exists() else f"folder {model_id} does not exist"
        return ModelLocation(role, model_id, "missing" if problem else "local",
                             None if problem else str(given.resolve()), problem)
    base = Path(local_dir).expanduser() if local_dir else resolve(settings).model_dir
    if base is not None:
        for candidate in (base / model_id, base / model_id.split("/")[-1]):
            if candidate.is_dir() and not folder_problem(candidate, role):
                return ModelLocation(role, model_id, "local", str(candidate.resolve()))
    if not _looks_like_repo_id(model_id):
        return ModelLocation(role, model_id, "missing", None,
                             f"{model_id!r} is neither a folder nor a Hugging Face repo id (owner/name)")
    cached = _cached_folder(model_id, role, cache_dir)
    if cached is None:
        return ModelLocation(role, model_id, "missing", None,
                             f"{model_id} is not in the Hugging Face cache"
                             + (f" nor under {base}" if base is not None else ""))
    problem = folder_problem(cached, role)
    if problem:
        return ModelLocation(role, model_id, "missing", None,
                             f"{model_id} is only partly in the Hugging Face cache ({problem})")
    return ModelLocation(role, model_id, "hf-cache", str(cached))


def locate_all(overrides=None, *, local_dir=None, cache_dir=None,
               settings: Optional[Settings] = None) -> dict[str, ModelLocation]:
    """{role: ModelLocation} for the models model_settings(overrides, settings=settings) gives."""
    settings = resolve(settings)
    return {role: locate(role, mid, local_dir=local_dir, cache_dir=cache_dir, settings=settings)
            for role, mid in model_settings(overrides, settings=settings).items()}


def missing_message(missing: list[ModelLocation]) -> str:
    """One clear sentence naming every missing model and the command that fetches them."""
    parts = [f"{m.role} model {m.model_id!r} ({m.problem})" for m in missing]
    return ("missing model weights: " + "; ".join(parts)
            + f". Fetch them with `{PULL_COMMAND}` on a machine with internet (downloads to the "
            "Hugging Face cache), or point ZOOMSCAPE_TEXT2IMG_MODEL / ZOOMSCAPE_INPAINT_MODEL / "
            "ZOOMSCAPE_DEPTH_MODEL (or --model-dir) at local folders")


# ------------------------------------------------------------------------------------ pulling

class PullError(RuntimeError):
    """A download failed (offline, network, unknown or gated repo); the message says which model."""


def pull(overrides=None, *, local_dir=None, cache_dir=None, download=None, log=print,
         settings: Optional[Settings] = None) -> dict[str, ModelLocation]:
    """Download every role's model that is not available yet into the HF cache → {role: location}.

    Local folders are never downloaded. download: the function to call (default
    huggingface_hub.snapshot_download; tests pass a fake). Raises PullError naming the model when a
    download fails, including when HF_HUB_OFFLINE=1 forbids the network.
    """
    if download is None:
        from huggingface_hub import snapshot_download as download
    from huggingface_hub import constants

    out = {}
    settings = resolve(settings)
    for role, model_id in model_settings(overrides, settings=settings).items():
        loc = locate(role, model_id, local_dir=local_dir, cache_dir=cache_dir, settings=settings)
        if loc.available:
            log(f"{role}: {model_id} already available ({loc.source}: {loc.path})")
            out[role] = loc
            continue
        if not _looks_like_repo_id(model_id) or Path(model_id).expanduser().is_absolute():
            raise PullError(f"{role} model {model_id!r}: {loc.problem}; only Hugging Face repo ids "
                            "can be downloaded")
        if constants.is_offline_mode() if hasattr(constants, "is_offline_mode") else constants.HF_HUB_OFFLINE:
            raise PullError(f"{role} model {model_id!r}: cannot download while HF_HUB_OFFLINE=1 is set "
                            "(unset it on a machine with internet)")
        first, fallback = ((DEPTH_PATTERNS, DEPTH_PATTERNS_BIN) if role == "depth"
                           else (PIPELINE_PATTERNS, PIPELINE_PATTERNS + PIPELINE_PATTERNS_BIN))
        log(f"{role}: downloading {model_id} to the Hugging Face cache ...")
        for patterns in (first, fallback):
            try:
                download(model_id, allow_patterns=patterns, cache_dir=cache_dir)
            except Exception as exc:  # noqa: BLE001 - any hub/network error becomes one clear line
                raise PullError(f"{role} model {model_id!r}: download failed "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
            loc = locate(role, model_id, local_dir=local_dir, cache_dir=cache_dir, settings=settings)
            if loc.available:
                break
        if not loc.available:
            raise PullError(f"{role} model {model_id!r}: downloaded, but still incomplete: {loc.problem}")
        log(f"{role}: {model_id} ready ({loc.path})")
        out[role] = loc
    return out
