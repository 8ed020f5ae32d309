"""One Settings object: flags beat the environment beat the defaults; bad values name the field (or
the variable); serve and generate hand it down and never write os.environ; nothing but
settings.py reads ZOOMSCAPE_* variables."""
import ast
import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest

from tests.helpers import job_request
from zoomscape import cli
from zoomscape.settings import DEFAULT_MODELS, ENV, Settings, SettingsError

PACKAGE = Path(cli.__file__).resolve().parent


def test_defaults():
    s = Settings()
    assert (s.engine, s.device, s.steps, s.pixel_budget, s.cpu_offload, s.attention_slicing) == \
        ("procedural", None, 50, None, None, None)
    assert s.models == DEFAULT_MODELS and s.model_dir is None
    assert s.data_dir == Path.home() / ".local" / "share" / "zoomscape"
    assert (s.host, s.port, s.token) == ("127.0.0.1", 8765, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 3


def test_environment_beats_defaults_and_blank_is_unset(tmp_path):
    env = {"ZOOMSCAPE_DEVICE": "cpu", "ZOOMSCAPE_STEPS": "12", "ZOOMSCAPE_PIXEL_BUDGET": "65536",
           "ZOOMSCAPE_CPU_OFFLOAD": "yes", "ZOOMSCAPE_ATTENTION_SLICING": "0",
           "ZOOMSCAPE_MODEL_DIR": str(tmp_path / "m"), "ZOOMSCAPE_DEPTH_MODEL": " me/depth ",
           "ZOOMSCAPE_INPAINT_MODEL": "  ", "ZOOMSCAPE_TEXT2IMG_MODEL": str(tmp_path / "sd"),
           "ZOOMSCAPE_DATA_DIR": str(tmp_path / "d"), "ZOOMSCAPE_WORLD_REFINE_SECONDS": "30",
           "ZOOMSCAPE_LEVEL_REFINE_SECONDS": "5",
           "OTHER": "ignored"}
    s = Settings.from_env(env)
    assert (s.device, s.steps, s.pixel_budget, s.cpu_offload, s.attention_slicing) == ("cpu", 12, 65536, True, False)
    assert s.world_refine_seconds == 30 and s.level_refine_seconds == 5
    assert s.model_dir == tmp_path / "m" and s.data_dir == tmp_path / "d"
    assert s.models == {"text2img": str(tmp_path / "sd"), "inpaint": DEFAULT_MODELS["inpaint"],
                        "depth": "me/depth"}                          # blank inpaint: the default
    assert Settings.from_env({}) == Settings()
    assert set(ENV.values()) == {k for k in env if k.startswith("ZOOMSCAPE_")}   # every variable read


def test_flags_beat_environment_beat_defaults(tmp_path):
    env = {"ZOOMSCAPE_STEPS": "9", "ZOOMSCAPE_DEPTH_MODEL": "env/depth", "ZOOMSCAPE_DEVICE": "cpu",
           "ZOOMSCAPE_DATA_DIR": str(tmp_path / "env-data"), "ZOOMSCAPE_CPU_OFFLOAD": "0"}
    parser = cli.build_parser()
    args = parser.parse_args(["serve", "--steps", "7", "--depth-model", "flag/depth", "--cpu-offload",
                              "--data-dir", str(tmp_path / "flag-data"), "--port", "9000"])
    s = cli.build_settings(args, env, engine=args.engine, port=args.port, data_dir=args.data_dir)
    assert s.steps == 7 and s.depth_model == "flag/depth" and s.cpu_offload is True    # flags
    assert s.device == "cpu"                                                            # environment
    assert s.text2img_model == DEFAULT_MODELS["text2img"] and s.attention_slicing is None  # defaults
    assert s.data_dir == tmp_path / "flag-data" and s.port == 9000
    bare = cli.build_settings(parser.parse_args(["serve"]), env, data_dir=None)       # no flags given
    assert (bare.steps, bare.depth_model, bare.cpu_offload, bare.data_dir) == (9, "env/depth", False,
                                                                                tmp_path / "env-data")
    gen = cli.build_settings(parser.parse_args(["generate", "r.json", "--out", "o", "--device", "cuda:1"]), env)
    assert gen.device == "cuda:1" and gen.steps == 9
    lst = cli.build_settings(parser.parse_args(["models", "list", "--model-dir", str(tmp_path)]), env)
    assert lst.model_dir == tmp_path and lst.depth_model == "env/depth"


@pytest.mark.parametrize("env, message", [
    ({"ZOOMSCAPE_STEPS": "many"}, "ZOOMSCAPE_STEPS: 'many' is not an integer"),
    ({"ZOOMSCAPE_STEPS": "0"}, "ZOOMSCAPE_STEPS: 0 must be within 1..1000"),
    ({"ZOOMSCAPE_PIXEL_BUDGET": "100"}, "ZOOMSCAPE_PIXEL_BUDGET: 100 must be within 4096..16777216 pixels"),
    ({"ZOOMSCAPE_CPU_OFFLOAD": "maybe"}, "ZOOMSCAPE_CPU_OFFLOAD: 'maybe' is not one of 1/0"),
    ({"ZOOMSCAPE_DEVICE": "tpu"}, "ZOOMSCAPE_DEVICE: 'tpu' is not one of cuda, cuda:N, mps, cpu"),
    ({"ZOOMSCAPE_DEPTH_MODEL": "x" * 501}, "ZOOMSCAPE_DEPTH_MODEL: model id is 501 characters, at most 500"),
])
def test_bad_environment_names_the_variable(env, message):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(message) and info.value.field == next(iter(env))


def test_bad_values_name_the_field():
    for kwargs, message in (({"steps": True}, "steps: must be an integer, got True"),
                            ({"steps": "5"}, "steps: must be an integer, got '5'"),
                            ({"engine": "magic"}, "engine: unknown engine 'magic'"),
                            ({"port": 70000}, "port: 70000 must be within 0..65535"),
                            ({"cpu_offload": 1}, "cpu_offload: must be true, false or unset"),
                            ({"token": " "}, "token: must not be blank"),
                            ({"depth_model": ""}, "depth_model: must be a model id or a folder"),
                            ({"data_dir": ""}, "data_dir: must be a folder path")):
        with pytest.raises(SettingsError, match="^" + message.replace("(", r"\(")):
            Settings(**kwargs)
    with pytest.raises(SettingsError, match="^colour: unknown setting"):
        Settings().with_flags(colour="red")
    with pytest.raises(SettingsError, match=r"^models\.vae: unknown model role"):
        Settings().with_models({"vae": "x"})
    with pytest.raises(SettingsError, match=r"^models\.depth: model id is 501 characters"):
        Settings().with_models({"depth": "x" * 501})
    assert Settings().with_flags(steps=None, device="", depth_model=" ") == Settings()   # not given


def test_cli_reports_a_bad_setting_with_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ZOOMSCAPE_STEPS", "many")
    (tmp_path / "r.json").write_text(json.dumps(job_request(2, size=64)))
    assert cli.main(["generate", str(tmp_path / "r.json"), "--out", str(tmp_path / "o")]) == 2
    assert "zoomscape: ZOOMSCAPE_STEPS: 'many' is not an integer" in capsys.readouterr().err
    monkeypatch.delenv("ZOOMSCAPE_STEPS")
    assert cli.main(["generate", str(tmp_path / "r.json"), "--out", str(tmp_path / "o"), "--steps", "0"]) == 2
    assert "zoomscape: steps: 0 must be within 1..1000" in capsys.readouterr().err
    assert cli.main(["models", "list", "--depth-model", "x" * 501]) == 2
    assert "depth_model: model id is 501 characters" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ handed down, never written

def test_generate_hands_settings_down_and_leaves_the_environment_alone(tmp_path, monkeypatch):
    from zoomscape.jobs import EnginePool

    seen = []
    original = EnginePool.get

    def get(self, name, models=None):
        seen.append(self.settings)
        return original(self, name, models)

    monkeypatch.setattr(EnginePool, "get", get)
    monkeypatch.setenv("ZOOMSCAPE_DEVICE", "cpu")
    (tmp_path / "r.json").write_text(json.dumps(job_request(2, size=64)))
    before = dict(os.environ)
    rc = cli.main(["generate", str(tmp_path / "r.json"), "--out", str(tmp_path / "out"), "--steps", "3",
                   "--depth-model", "flag/depth", "--cpu-offload", "--model-dir", str(tmp_path)])
    assert rc == 0 and (tmp_path / "out" / "manifest.json").is_file()
    assert dict(os.environ) == before
    (settings,) = seen
    assert (settings.steps, settings.depth_model, settings.cpu_offload, settings.model_dir, settings.device) == \
        (3, "flag/depth", True, tmp_path, "cpu")


def test_serve_hands_settings_to_the_job_store_and_leaves_the_environment_alone(tmp_path, monkeypatch):
    import uvicorn

    import zoomscape.server

    stores = []
    real_create_app = zoomscape.server.create_app

    def create_app(store, *args, **kwargs):
        stores.append(store)
        return real_create_app(store, *args, **kwargs)

    monkeypatch.setattr(zoomscape.server, "create_app", create_app)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: None)   # never bind or serve
    monkeypatch.setenv("ZOOMSCAPE_STEPS", "9")
    monkeypatch.setenv("ZOOMSCAPE_INPAINT_MODEL", "env/inpaint")
    before = dict(os.environ)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        rc = cli.main(["serve", "--port", "0", "--data-dir", str(tmp_path / "data"), "--no-zeroconf",
                       "--steps", "4", "--device", "cpu", "--attention-slicing",
                       "--text2img-model", "flag/sd", "--model-dir", str(tmp_path)])
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert rc == 1  # uvicorn never started (run was replaced): a clean exit, not a crash
    assert dict(os.environ) == before
    (store,) = stores
    s = store.engines.settings
    assert (s.engine, s.steps, s.device, s.attention_slicing, s.text2img_model, s.inpaint_model) == \
        ("procedural", 4, "cpu", True, "flag/sd", "env/inpaint")
    assert (s.model_dir, s.data_dir, s.port, s.host) == (tmp_path, tmp_path / "data", 0, "127.0.0.1")
    assert store.data_dir == tmp_path / "data"


def _python_files():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _environ_uses(tree: ast.AST):
    """(line, kind) of every os.environ / os.getenv / os.putenv / os.unsetenv use; kind "write"
    for assignments, deletions and mutating calls on os.environ, else "read"."""
    writes = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"}
    out = set()
    for node in ast.walk(tree):
        if _is_environ(node):
            out.add((node.lineno, "read"))   # any mention of os.environ can read it
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            if node.attr in ("putenv", "unsetenv"):
                out.add((node.lineno, "write"))
            elif node.attr == "getenv":
                out.add((node.lineno, "read"))
        if isinstance(node, ast.Subscript) and _is_environ(node.value) and isinstance(node.ctx, (ast.Store, ast.Del)):
            out.add((node.lineno, "write"))
        if isinstance(node, ast.Attribute) and _is_environ(node.value) and node.attr in writes:
            out.add((node.lineno, "write"))
    return sorted(out)


def _is_environ(node) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ" and isinstance(node.value, ast.Name)
            and node.value.id == "os")


def test_nothing_writes_the_environment_and_only_settings_reads_zoomscape_variables():
    files = _python_files()
    assert PACKAGE / "settings.py" in files and len(files) > 10
    problems = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        uses = _environ_uses(ast.parse(text))
        rel = path.relative_to(PACKAGE)
        problems += [f"{rel}:{line}: writes the environment" for line, kind in uses if kind == "write"]
        reads = [line for line, kind in uses if kind == "read"]
        if path.name != "settings.py" and reads and "ZOOMSCAPE_" in text:
            problems.append(f"{rel}:{reads[0]}: reads the environment and names a ZOOMSCAPE_ variable")
    assert problems == []
    # the scan finds what it looks for
    found = _environ_uses(ast.parse("import os\nos.environ['A'] = '1'\nos.environ.get('B')\n"
                                    "os.environ.update(C='2')\nx = os.getenv('D')"))
    assert found == [(2, "read"), (2, "write"), (3, "read"), (4, "read"), (4, "write"), (5, "read")]
