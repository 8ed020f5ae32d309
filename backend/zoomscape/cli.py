"""The ``zoomscape`` command: serve, generate, models, discover.

    zoomscape serve [--host 127.0.0.1] [--port 8765] [--data-dir DIR] [--lan] [--token T]
                    [--engine procedural|diffusers] [--no-zeroconf] [--model-dir DIR]
                    [--text2img-model ID] [--inpaint-model ID] [--depth-model ID]
                    [--device D] [--steps N] [--cpu-offload] [--attention-slicing]
                    [--depth-truth]   (procedural engine: depth estimates are the true depth)
    zoomscape generate REQUEST.json --out DIR   (+ the engine flags: --device, --steps, --model-dir, ...)
    zoomscape models list [--json] | pull [--engine diffusers]   (+ --model-dir, --text2img-model, ...)
    zoomscape discover [--timeout 3] [--json]

Each command builds one settings.Settings from its flags and the environment (flags beat
ZOOMSCAPE_* variables beat defaults; build_settings) and hands it down: to the job store's
EnginePool, the engines and models.py. Nothing here writes os.environ.

Exit codes: 0 success, 1 the work failed (or a server could not start), 2 bad input (usage,
unreadable request, a request that breaks a rule, a bad setting: the message names the field).
"""
from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
from pathlib import Path
from typing import Optional

from zoomscape import __version__
from zoomscape.wire.names import DEFAULT_PORT

LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"


# The flags every command that builds an engine takes, named as settings.Settings' fields.
ENGINE_FLAGS = ("device", "steps", "cpu_offload", "attention_slicing", "model_dir",
                "text2img_model", "inpaint_model", "depth_model", "level_refine_seconds",
                "world_refine_seconds")


def build_settings(args, environ=None, **given):
    """The Settings of one command: the environment (environ, default os.environ) overridden by
    the engine flags in args that were given, and by given (e.g. serve's engine, host, port,
    token, data_dir; None = not given). Raises settings.SettingsError naming the field."""
    from zoomscape.settings import Settings

    flags = {name: getattr(args, name, None) for name in ENGINE_FLAGS}
    return Settings.from_env(environ).with_flags(**flags, **given)


def _err(message: str) -> None:
    print(f"zoomscape: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- serve

def serve_host(args) -> Optional[str]:
    """serve's bind address: --host (default 127.0.0.1), or all interfaces with --lan. --lan with a
    --host other than 0.0.0.0 is a conflict: refused (None) after saying why on stderr."""
    if args.lan and args.host not in (None, ALL_INTERFACES):
        _err(f"--lan binds all interfaces ({ALL_INTERFACES}) and cannot be combined with --host {args.host}; "
             f"to serve only {args.host}, drop --lan and pass --token TOKEN")
        return None
    return ALL_INTERFACES if args.lan else (args.host or LOOPBACK)


# The procedural engine's options under --depth-truth: its depth estimate is the world's true
# z-depth (no scale or shift lie, no noise, no warp), so a job's errors are the algorithm's alone.
DEPTH_TRUTH_OPTIONS = {"depth_scale_range": (1.0, 1.0), "first_scale_jitter": 0.0, "depth_shift": 0.0,
                       "depth_noise": 0.0, "depth_warp": 0.0}


def depth_truth_pool(settings):
    """An EnginePool whose procedural engine tells the true depth (DEPTH_TRUTH_OPTIONS), also for
    requests naming models (the procedural engine loads none; the pool would otherwise rebuild a
    default engine for them)."""
    from zoomscape.engines.procedural import ProceduralEngine
    from zoomscape.jobs import EnginePool

    class DepthTruthPool(EnginePool):
        def get(self, name, models=None):
            return super().get(name, None if name == "procedural" else models)

    return DepthTruthPool(settings, procedural=ProceduralEngine(**DEPTH_TRUTH_OPTIONS))


def cmd_serve(args) -> int:
    import uvicorn

    from zoomscape.engines import EngineUnavailable
    from zoomscape.jobs import EnginePool, JobStore
    from zoomscape.server import create_app
    from zoomscape.settings import SettingsError

    import logging

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    host = serve_host(args)
    if host is None:
        return 2
    if args.depth_truth and args.engine != "procedural":
        _err(f"--depth-truth makes the procedural engine's depth estimate the true depth and only works "
             f"with --engine procedural (got --engine {args.engine}); drop --depth-truth")
        return 2
    token = args.token
    if args.lan and not token:
        token = secrets.token_urlsafe(24)
    try:
        settings = build_settings(args, engine=args.engine, host=host, port=args.port, token=token,
                                  data_dir=args.data_dir)
    except SettingsError as exc:
        _err(str(exc))
        return 2
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)

    store = JobStore(data_dir, engines=depth_truth_pool(settings) if args.depth_truth else EnginePool(settings))
    try:
        engine = store.engines.get(args.engine)
    except EngineUnavailable as exc:
        _err(f"--engine {args.engine}: {exc}")
        return 1

    advertiser = None
    if not args.no_zeroconf:
        from zoomscape.discovery import Advertiser, service_properties

        props = service_properties(__version__, engine.name, str(engine.device), token is not None)
        try:
            advertiser = Advertiser(host, args.port, props).start()
        except Exception as exc:  # noqa: BLE001 - the API works without discovery
            _err(f"warning: zeroconf advertising failed ({type(exc).__name__}: {exc}); "
                 "clients must enter host and port by hand")
            advertiser = None

    hooks = [advertiser.close] if advertiser else []
    app = create_app(store, args.engine, token, on_shutdown=hooks)
    shown = LOOPBACK if host in ("0.0.0.0", "") else host
    print(f"Zoomscape {__version__} backend: engine {engine.name} on {engine.device}", flush=True)
    if args.depth_truth:
        print("depth: the true depth (--depth-truth: the procedural engine's depth estimate does not lie)",
              flush=True)
    print(f"data: {data_dir}", flush=True)
    print(f"url: http://{shown}:{args.port}/v1", flush=True)
    if host == "0.0.0.0":
        print(f"listening on all interfaces (--lan), port {args.port}", flush=True)
    if token:
        print(f"token: {token}", flush=True)
    if advertiser:
        print(f"zeroconf: advertising {advertiser.registered_name!r}", flush=True)

    # uvicorn re-raises SIGTERM after its graceful shutdown; a no-op handler lets us return normally.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=args.port, log_level=args.log_level,
                                           timeout_graceful_shutdown=5))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if advertiser:
            advertiser.close()
        store.stop()
    print("zoomscape: stopped", flush=True)
    return 0 if server.started else 1


# ------------------------------------------------------------------------------------- generate

class TextProgress:
    """progress(stage, step, total, message) → one status line (rewritten in place on a terminal)."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.tty = stream, stream.isatty()

    def __call__(self, stage: str, step: int, total: int, message: str = "") -> None:
        line = f"[{stage} {step}/{total}] {message}"
        if self.tty:
            self.stream.write("\r" + line[:120].ljust(120))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def cmd_generate(args) -> int:
    from zoomscape.schema import RequestError, validate_request_json
    from zoomscape.settings import SettingsError

    try:
        settings = build_settings(args)
    except SettingsError as exc:
        _err(str(exc))
        return 2
    path = Path(args.request)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        _err(f"{path}: cannot read ({exc.strerror or exc})")
        return 2
    try:
        request = validate_request_json(raw)  # bad JSON, deep nesting, bad UTF-8: field "body"
    except RequestError as exc:
        for p in exc.problems:
            _err(f"{path}: {p['field']}: {p['message']}")
        return 2

    from zoomscape import pipeline
    from zoomscape.jobs import EnginePool

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = TextProgress()
    try:
        models = {k: v for k, v in (request.models.model_dump() if request.models else {}).items() if v}
        engine = EnginePool(settings).get(request.engine, models or None)
        manifest = pipeline.run_job(request, out, progress=progress, engine=engine)
    except KeyboardInterrupt:
        progress.done()
        _err("interrupted")
        return 1
    except Exception as exc:  # noqa: BLE001 - report, exit 1
        progress.done()
        _err(f"failed: {type(exc).__name__}: {exc}")
        return 1
    progress.done()
    points = manifest.points
    print(f"wrote {out / 'pointcloud.ply'} ({points} points) and {out / 'manifest.json'}", flush=True)
    return 0


# --------------------------------------------------------------------------------------- models

def cmd_models(args) -> int:
    from zoomscape import models
    from zoomscape.server import engine_names
    from zoomscape.settings import SettingsError

    try:
        settings = build_settings(args)
    except SettingsError as exc:
        _err(str(exc))
        return 2
    if args.action == "list":
        try:
            locations = models.locate_all(settings=settings)
        except models.ModelSettingsError as exc:
            _err(str(exc))
            return 2
        missing = [loc for loc in locations.values() if not loc.available]
        if args.json:
            print(json.dumps({"procedural": {"available": True, "models": []},
                              "diffusers": {"available": not missing,
                                            "models": [loc.as_dict() for loc in locations.values()]}},
                             indent=1))
            return 0
        for name in engine_names():
            if name == "procedural":
                print("procedural: available on cpu")
                print("  (no model weights needed)")
            elif name == "diffusers":
                print("diffusers: available" if not missing else
                      f"diffusers: not available: {len(missing)} of {len(locations)} models missing "
                      f"(fetch them with `{models.PULL_COMMAND}`)")
                for loc in locations.values():
                    where = f"{loc.source}: {loc.path}" if loc.available else f"missing: {loc.problem}"
                    print(f"  - {loc.role}: {loc.model_id}  [{where}]")
            else:
                print(f"{name}: unknown to this command")
        return 0

    name = args.engine_flag or args.engine
    if name not in engine_names():
        _err(f"engine: unknown engine {name!r} (known: {', '.join(engine_names())})")
        return 2
    if name == "procedural":
        print("procedural: nothing to download (a built-in analytic world, no model weights)")
        return 0
    try:
        models.pull(settings=settings, log=lambda line: print(line, flush=True))
    except models.ModelSettingsError as exc:
        _err(str(exc))
        return 2
    except models.PullError as exc:
        _err(f"{name}: models not available, download failed: {exc}")
        return 1
    print(f"{name}: all models available", flush=True)
    return 0


def _add_model_flags(parser) -> None:
    """--model-dir and one flag per model role (overriding the environment and the defaults)."""
    parser.add_argument("--model-dir", help="folder of local model copies (DIR/<owner>/<name> or DIR/<name>); "
                                            "default $ZOOMSCAPE_MODEL_DIR")
    for role, what in (("text2img", "text-to-image pipeline"), ("inpaint", "inpainting pipeline"),
                       ("depth", "depth model")):
        parser.add_argument(f"--{role}-model", dest=f"{role}_model",
                            help=f"{what}: a Hugging Face repo id or a local folder "
                                 f"(default $ZOOMSCAPE_{role.upper()}_MODEL or the built-in default)")


def _add_engine_flags(parser) -> None:
    """The model flags and the diffusers engine's device/steps/memory flags (settings.Settings'
    fields; a flag not given leaves the environment's value or the default)."""
    _add_model_flags(parser)
    parser.add_argument("--device", help="diffusers engine device: cuda, cuda:N, mps or cpu "
                                         "(default $ZOOMSCAPE_DEVICE or the best available)")
    parser.add_argument("--steps", type=int, help="diffusers engine denoising steps (default $ZOOMSCAPE_STEPS or 50)")
    parser.add_argument("--cpu-offload", action="store_true", default=None,
                        help="diffusers engine: model CPU offload (8 GB cards; default $ZOOMSCAPE_CPU_OFFLOAD)")
    parser.add_argument("--attention-slicing", action="store_true", default=None,
                        help="diffusers engine: attention slicing (default $ZOOMSCAPE_ATTENTION_SLICING, "
                             "else on for CUDA cards with at most 10 GB)")
    parser.add_argument("--level-refine-seconds", type=float, metavar="S",
                        help="refine each zoom level's Gaussians for at most S seconds (0: off; default "
                             "$ZOOMSCAPE_LEVEL_REFINE_SECONDS, else 20 with CUDA, 0 on the CPU)")
    parser.add_argument("--world-refine-seconds", type=float, metavar="S",
                        help="refine the world's Gaussians for at most S seconds (0: off; default "
                             "$ZOOMSCAPE_WORLD_REFINE_SECONDS, else 60 with CUDA, 0 on the CPU)")


# ------------------------------------------------------------------------------------- discover

def cmd_discover(args) -> int:
    from zoomscape.discovery import browse

    found = browse(args.timeout)
    if args.json:
        print(json.dumps(found, indent=1))
        return 0
    if not found:
        print(f"no Zoomscape backends found in {args.timeout:g} s")
        return 0
    for b in found:
        p = b["properties"]
        print(f"{b['name']}: http://{b['host']}:{b['port']}{p.get('path', '/v1')}  engine={p.get('engine')} "
              f"device={p.get('device')} auth={p.get('auth')} version={p.get('version')}")
    return 0


# ----------------------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoomscape", description="Zoomscape backend")
    parser.add_argument("--version", action="version", version=f"zoomscape {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the HTTP backend")
    s.add_argument("--host", help="bind address (default 127.0.0.1; not with --lan, which binds 0.0.0.0)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT)
    s.add_argument("--data-dir", help="job store folder (default $ZOOMSCAPE_DATA_DIR or ~/.local/share/zoomscape)")
    s.add_argument("--lan", action="store_true", help="bind all interfaces; requires a token (generated if not given)")
    s.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on every endpoint but health")
    s.add_argument("--engine", default="procedural", choices=["procedural", "diffusers"])
    s.add_argument("--no-zeroconf", action="store_true", help="do not advertise the service")
    s.add_argument("--depth-truth", action="store_true",
                   help="procedural engine only: its depth estimate is the true depth (no scale, shift, "
                        "noise or warp), to tell what the monocular depth's lies cost from what the "
                        "algorithm costs (benchmarks, tests)")
    s.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    _add_engine_flags(s)
    s.set_defaults(func=cmd_serve)

    g = sub.add_parser("generate", help="run one request without a server")
    g.add_argument("request", help="REQUEST.json (the body of POST /v1/jobs)")
    g.add_argument("--out", required=True, help="output folder for pointcloud.ply and manifest.json")
    _add_engine_flags(g)
    g.set_defaults(func=cmd_generate)

    m = sub.add_parser("models", help="list engines and their models, or fetch them")
    msub = m.add_subparsers(dest="action", required=True)
    lst = msub.add_parser("list", help="each model id, where it would load from and whether it is available")
    lst.add_argument("--json", action="store_true", help="print the list as JSON")
    _add_model_flags(lst)
    pull = msub.add_parser("pull", help="download an engine's models to the Hugging Face cache (needs internet)")
    pull.add_argument("engine", nargs="?", default="procedural")
    pull.add_argument("--engine", dest="engine_flag", choices=["procedural", "diffusers"],
                      help="the engine whose models to fetch (same as the positional ENGINE)")
    _add_model_flags(pull)
    m.set_defaults(func=cmd_models)

    d = sub.add_parser("discover", help="list backends advertised with zeroconf")
    d.add_argument("--timeout", type=float, default=3.0)
    d.add_argument("--json", action="store_true", help="print the list as JSON")
    d.set_defaults(func=cmd_discover)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
