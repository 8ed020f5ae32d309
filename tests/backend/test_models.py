"""Model settings (defaults < environment < overrides), where each model loads from (folder, model
folder, Hugging Face cache), pulling (never on the network here), and the `zoomscape models` CLI."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

pytest.importorskip("diffusers")

from tests.helpers.backend_process import backend_python  # noqa: E402
from tests.helpers.tiny_models import build_all  # noqa: E402
from zoomscape import models  # noqa: E402

ZOOMSCAPE = str(Path(backend_python()).parent / "zoomscape")
ENV_VARS = list(models.ENV_VARS.values()) + [models.MODEL_DIR_ENV]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return build_all(tmp_path_factory.getbasetemp() / "tiny-models")


def fake_cache(cache_dir: Path, repo_id: str, folder) -> Path:
    """Lay folder out as repo_id in a Hugging Face hub cache (refs/main → snapshots/<commit>)."""
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    shutil.copytree(folder, snap, dirs_exist_ok=True)
    return snap


def test_defaults_exist_upstream_and_are_documented():
    assert models.DEFAULTS == {
        "text2img": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "inpaint": "stable-diffusion-v1-5/stable-diffusion-inpainting",
        "depth": "depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf"}
    for model_id in models.DEFAULTS.values():
        assert model_id in models.__doc__


def test_settings_precedence(monkeypatch):
    assert models.model_settings() == models.DEFAULTS
    monkeypatch.setenv("ZOOMSCAPE_DEPTH_MODEL", "me/depth-env")
    monkeypatch.setenv("ZOOMSCAPE_INPAINT_MODEL", "  ")  # blank falls through to the default
    s = models.model_settings({"text2img": "me/sd-request", "depth": None})
    assert s == {"text2img": "me/sd-request", "inpaint": models.DEFAULTS["inpaint"], "depth": "me/depth-env"}
    assert models.model_settings({"depth": "me/depth-request"})["depth"] == "me/depth-request"
    # a handed-down Settings (the server's: flags > environment > defaults) replaces the environment
    from zoomscape.settings import Settings

    handed = Settings(depth_model="me/depth-settings")
    assert models.model_settings(settings=handed) == {**models.DEFAULTS, "depth": "me/depth-settings"}
    assert models.model_settings({"depth": "me/depth-request"}, settings=handed)["depth"] == "me/depth-request"


def test_settings_errors_name_the_field():
    with pytest.raises(models.ModelSettingsError, match=r"models\.refiner: unknown model role"):
        models.model_settings({"refiner": "x/y"})
    with pytest.raises(models.ModelSettingsError, match=r"models\.depth: .*at most 500"):
        models.model_settings({"depth": "x" * 501})


def test_locate_a_local_folder(tiny, tmp_path):
    loc = models.locate("text2img", tiny["text2img"])
    assert loc.available and loc.source == "local" and Path(loc.path) == Path(tiny["text2img"]).resolve()
    broken = tmp_path / "sd"
    shutil.copytree(tiny["text2img"], broken)
    (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    loc = models.locate("text2img", str(broken))
    assert not loc.available and "vae weights" in loc.problem
    loc = models.locate("depth", tiny["text2img"])  # a pipeline folder is no depth model
    assert not loc.available and "has no config.json" in loc.problem
    loc = models.locate("inpaint", str(tmp_path / "nowhere"))
    assert not loc.available and "does not exist" in loc.problem


def test_locate_under_the_model_dir(tiny, tmp_path, monkeypatch):
    shutil.copytree(tiny["depth"], tmp_path / "depth-anything" / "My-Depth")
    shutil.copytree(tiny["text2img"], tmp_path / "my-sd")
    loc = models.locate("depth", "depth-anything/My-Depth", local_dir=tmp_path)
    assert loc.source == "local" and Path(loc.path) == (tmp_path / "depth-anything" / "My-Depth").resolve()
    monkeypatch.setenv("ZOOMSCAPE_MODEL_DIR", str(tmp_path))
    loc = models.locate("text2img", "someone/my-sd")  # DIR/<name> also works
    assert loc.source == "local" and Path(loc.path) == (tmp_path / "my-sd").resolve()
    from zoomscape.settings import Settings

    monkeypatch.delenv("ZOOMSCAPE_MODEL_DIR")
    loc = models.locate("text2img", "someone/my-sd", settings=Settings(model_dir=tmp_path))
    assert loc.source == "local" and Path(loc.path) == (tmp_path / "my-sd").resolve()
    assert models.locate("text2img", "someone/my-sd", settings=Settings(), cache_dir=tmp_path / "hub").source == "missing"


def test_locate_in_the_hf_cache(tiny, tmp_path):
    cache = tmp_path / "hub"
    assert models.locate("depth", "me/tiny-depth", cache_dir=cache).source == "missing"
    snap = fake_cache(cache, "me/tiny-depth", tiny["depth"])
    loc = models.locate("depth", "me/tiny-depth", cache_dir=cache)
    assert loc.source == "hf-cache" and Path(loc.path) == snap
    (snap / "model.safetensors").unlink()  # an interrupted download
    loc = models.locate("depth", "me/tiny-depth", cache_dir=cache)
    assert not loc.available and "only partly" in loc.problem
    loc = models.locate("depth", "not a repo id!", cache_dir=cache)
    assert not loc.available and "neither a folder nor" in loc.problem


def test_missing_message_names_models_and_command(tmp_path):
    locs = models.locate_all(cache_dir=tmp_path)
    msg = models.missing_message([l for l in locs.values() if not l.available])
    for model_id in models.DEFAULTS.values():
        assert model_id in msg
    assert "zoomscape models pull" in msg


def test_pull_downloads_into_the_cache(tiny, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    cache = tmp_path / "hub"
    calls = []
    sources = {"me/sd": tiny["text2img"], "me/sd-inpaint": tiny["inpaint"], "me/depth": tiny["depth"]}

    def download(repo_id, allow_patterns, cache_dir):
        calls.append((repo_id, allow_patterns))
        fake_cache(Path(cache_dir), repo_id, sources[repo_id])

    overrides = {"text2img": "me/sd", "inpaint": "me/sd-inpaint", "depth": "me/depth"}
    locs = models.pull(overrides, cache_dir=cache, download=download, log=lambda line: None)
    assert {r: l.source for r, l in locs.items()} == {"text2img": "hf-cache", "inpaint": "hf-cache", "depth": "hf-cache"}
    assert [c[0] for c in calls] == ["me/sd", "me/sd-inpaint", "me/depth"]
    assert "unet/diffusion_pytorch_model.safetensors" in calls[0][1] and not any("ckpt" in p for p in calls[0][1])
    calls.clear()
    models.pull(overrides, cache_dir=cache, download=download, log=lambda line: None)
    assert calls == []  # already there: nothing fetched again


def test_pull_failures_are_clear(tiny, tmp_path, monkeypatch):
    from huggingface_hub import constants

    def refuse(repo_id, **kw):
        raise OSError(f"could not reach huggingface.co for {repo_id}\nlong traceback text")

    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    with pytest.raises(models.PullError, match=r"depth model 'me/nothing': download failed \(OSError: could not reach"):
        models.pull({**tiny, "depth": "me/nothing"}, cache_dir=tmp_path, download=refuse, log=lambda line: None)
    with pytest.raises(models.PullError, match="only Hugging Face repo ids can be downloaded"):
        models.pull({**tiny, "inpaint": str(tmp_path / "nowhere")}, cache_dir=tmp_path, download=refuse,
                    log=lambda line: None)
    monkeypatch.setattr(constants, "is_offline_mode", lambda: True)
    with pytest.raises(models.PullError, match="HF_HUB_OFFLINE=1"):
        models.pull({**tiny, "depth": "me/nothing"}, cache_dir=tmp_path, download=refuse, log=lambda line: None)


def run_cli(*args, env=None, timeout=120):
    base = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
            "OMP_NUM_THREADS": "1"}
    return subprocess.run([ZOOMSCAPE, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**base, **(env or {})})


def test_cli_models_list(tiny, tmp_path):
    empty = {"HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    res = run_cli("models", "list", env=empty)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "procedural: available" in out and "diffusers: not available" in out
    assert "zoomscape models pull" in out
    for role, model_id in models.DEFAULTS.items():
        assert f"- {role}: {model_id}  [missing:" in out, out
    res = run_cli("models", "list", "--json", "--depth-model", tiny["depth"], env=empty)
    listed = {m["role"]: m for m in json.loads(res.stdout)["diffusers"]["models"]}
    assert listed["depth"]["source"] == "local" and listed["depth"]["available"]
    assert listed["text2img"]["source"] == "missing"
    env = {**empty, "ZOOMSCAPE_TEXT2IMG_MODEL": tiny["text2img"], "ZOOMSCAPE_INPAINT_MODEL": tiny["inpaint"],
           "ZOOMSCAPE_DEPTH_MODEL": tiny["depth"]}
    res = run_cli("models", "list", env=env)
    assert "diffusers: available" in res.stdout and f"- inpaint: {tiny['inpaint']}  [local: " in res.stdout


def test_cli_models_pull_offline_fails_clearly(tiny, tmp_path):
    empty = {"HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    res = run_cli("models", "pull", "--engine", "diffusers", env=empty)
    assert res.returncode == 1
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in res.stderr and "HF_HUB_OFFLINE=1" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_cli("models", "pull", "diffusers", "--text2img-model", tiny["text2img"], "--inpaint-model",
                  tiny["inpaint"], "--depth-model", tiny["depth"], env=empty)
    assert res.returncode == 0 and "all models available" in res.stdout, res.stderr
    res = run_cli("models", "pull", "procedural")
    assert res.returncode == 0 and "nothing to download" in res.stdout
    assert run_cli("models", "pull", "magic").returncode == 2


def test_check_engine_is_cheap_and_clear(tiny, monkeypatch):
    from zoomscape.engines import EngineUnavailable, available_engines, check_engine

    check_engine("procedural")
    check_engine("diffusers", models=tiny)  # every model found: no error, nothing loaded
    with pytest.raises(EngineUnavailable, match="depth model 'me/absent'.*zoomscape models pull"):
        check_engine("diffusers", models={**tiny, "depth": "me/absent"})
    with pytest.raises(EngineUnavailable, match="models.vae: unknown model role"):
        check_engine("diffusers", models={"vae": "x"})
    with pytest.raises(EngineUnavailable, match="unknown engine 'magic'"):
        check_engine("magic")
    for role, var in models.ENV_VARS.items():
        monkeypatch.setenv(var, tiny[role])
    assert available_engines() == ["procedural", "diffusers"]
    monkeypatch.setenv("ZOOMSCAPE_DEPTH_MODEL", "me/absent")
    assert available_engines() == ["procedural"]
    # with the server's Settings handed down, the environment does not matter
    from zoomscape.settings import Settings

    handed = Settings(**{f"{role}_model": tiny[role] for role in models.ROLES})
    assert available_engines(handed) == ["procedural", "diffusers"]
    check_engine("diffusers", settings=handed)
    with pytest.raises(EngineUnavailable, match="depth model 'me/absent'"):
        check_engine("diffusers", models={"depth": "me/absent"}, settings=handed)
