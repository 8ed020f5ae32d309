"""Tests for scripts/build_extension: the per-platform extension zips, checked from the outside.

Builds once into a temp dir (wheels come from .venv/wheel-cache or PyPI; without network and
without a cache the build, and so these tests, fail with pip's message), then checks every zip with
Blender's own `blender_ext.py validate`, reads the zips' contents (addon/* at the top and
backend/zoomscape/wire as wire/, byte for byte), and installs the linux-x64 zip into headless bpy 4.2
and 4.5 (Python 3.11), 5.2 and 5.3 (Python 3.13) in isolated user directories, where the extension imports its
own copy of the wire package.
Run: .venv/backend/bin/python -m pytest tests/build -q
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "build_extension"
PLATFORMS = ("linux-x64", "windows-x64", "macos-arm64", "macos-x64")
# Wheel platform-tag fragments that identify each Blender platform's CPU/OS.
PLATFORM_TAG = {"linux-x64": ("manylinux", "_x86_64"), "windows-x64": ("win", "_amd64"),
                "macos-arm64": ("macosx_", "_arm64"), "macos-x64": ("macosx_", "_x86_64")}
BPY_ENVS = {"bpy42": ((3, 11), "4.2"), "bpy45": ((3, 11), "4.5"), "bpy52": ((3, 13), "5.2"),
            "bpy53": ((3, 13), "5.3")}


def load_build_module():
    """scripts/build_extension.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("build_extension", ROOT / "scripts" / "build_extension.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


be = load_build_module()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_files(folder: Path, prefix: str = "") -> dict[str, bytes]:
    """The files of folder as they must appear in the zip under prefix (no caches or dot-files)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not any(part == "__pycache__" or part.startswith(".") for part in rel.parts) \
                and p.suffix not in (".pyc", ".pyo"):
            out[prefix + rel.as_posix()] = p.read_bytes()
    return out


def addon_files() -> dict[str, bytes]:
    """addon/ files as they must appear at the zip's top level."""
    return source_files(ROOT / "addon")


def wire_files() -> dict[str, bytes]:
    """backend/zoomscape/wire files as they must appear in the zip: under wire/."""
    return source_files(ROOT / "backend" / "zoomscape" / "wire", "wire/")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Run scripts/build_extension into a temp dir; return (output dir, stdout)."""
    out = tmp_path_factory.mktemp("dist")
    manifest_before = sha256(ROOT / "blender_manifest.toml")
    proc = subprocess.run([str(SCRIPT), "--output-dir", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"scripts/build_extension failed (exit {proc.returncode}); if pip could not reach PyPI, "
        f"connect to the network once so .venv/wheel-cache fills.\n{proc.stdout}\n{proc.stderr}"
    )
    assert sha256(ROOT / "blender_manifest.toml") == manifest_before, "the repository manifest must stay as it is"
    return out, proc.stdout


@pytest.fixture(scope="module")
def manifest_info():
    return tomllib.loads((ROOT / "blender_manifest.toml").read_text(encoding="utf-8"))


def zip_path(out: Path, info: dict, platform: str) -> Path:
    return out / f"{info['id']}-{info['version']}-{platform.replace('-', '_')}.zip"


def test_four_zips_built_and_printed_with_sizes(built, manifest_info):
    out, stdout = built
    want = {zip_path(out, manifest_info, p).name for p in PLATFORMS}
    assert {p.name for p in out.iterdir()} == want
    for name in want:
        size_mb = (out / name).stat().st_size / 1e6
        assert f"{out / name}  {size_mb:.2f} MB" in stdout


@pytest.mark.parametrize("platform", PLATFORMS)
def test_zip_validates_with_every_blender(built, manifest_info, platform):
    exts = be.find_blender_ext()
    assert {e.blender_version for e in exts} >= {"4.2", "5.2"}, f"blender_ext.py not found for both lines: {exts}"
    for ext in exts:
        proc = subprocess.run([str(ext.python), str(ext.script), "validate", str(zip_path(built[0], manifest_info, platform))],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"Blender {ext.blender_version} validate: {proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_zip_holds_manifest_addon_and_exactly_its_wheels(built, manifest_info, platform):
    with zipfile.ZipFile(zip_path(built[0], manifest_info, platform)) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode("utf-8"))
        contents = {n: zf.read(n) for n in names}

    assert "blender_manifest.toml" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    files = addon_files()
    assert "__init__.py" in files, "addon/__init__.py is missing"
    assert not [rel for rel in files if rel.split("/")[0] in be.RESERVED], "addon/ uses a reserved name"
    for rel, data in files.items():  # addon/* at the top level, byte for byte
        assert contents.get(rel) == data, f"{rel} missing or different in the zip"
    wire = wire_files()
    assert {"wire/__init__.py", "wire/ply.py", "wire/splats.py", "wire/manifest.py"} <= set(wire)
    for rel, data in wire.items():  # backend/zoomscape/wire as wire/, byte for byte
        assert contents.get(rel) == data, f"{rel} missing or different in the zip"
    assert sorted(n for n in names if n.startswith("wire/")) == sorted(wire), "wire/ holds other files"
    other = set(names) - set(files) - set(wire) - {"blender_manifest.toml"}
    wheels = sorted(n for n in other if n.startswith("wheels/") and n.endswith(".whl"))
    assert sorted(other) == wheels, f"unexpected files: {sorted(other - set(wheels))}"

    # zeroconf for CPython 3.11 and 3.13 built for this platform, plus pure-Python ifaddr.
    tags = [be.wheel_tags(w.removeprefix("wheels/")) for w in wheels]
    ifaddr = [t for t in tags if t[0] == "ifaddr"]
    zeroconf = [t for t in tags if t[0] == "zeroconf"]
    assert len(tags) == 3 and len(ifaddr) == 1 and ifaddr[0][4] == "any"
    assert sorted((t[2], t[3]) for t in zeroconf) == [("cp311", "cp311"), ("cp313", "cp313")]
    head, tail = PLATFORM_TAG[platform]
    for t in zeroconf:
        assert t[1] == be.ZEROCONF_VERSION
        assert all(tag.startswith(head) and tag.endswith(tail) for tag in t[4].split(".")), t[4]

    # Unmodified: identical bytes to the PyPI download in the cache.
    cache = ROOT / ".venv" / "wheel-cache"
    for w in wheels:
        cached = list(cache.rglob(w.removeprefix("wheels/")))
        assert cached and hashlib.sha256(contents[w]).hexdigest() == sha256(cached[0])

    # The manifest Blender reads (with [build.generated]) lists exactly the wheels inside.
    generated = manifest["build"]["generated"]
    assert sorted(generated["wheels"]) == wheels
    assert generated["platforms"] == [platform]
    assert manifest["id"] == manifest_info["id"] and manifest["version"] == manifest_info["version"]


def test_wheel_platforms_agree_with_blenders_own_mapping(built):
    """Our wheel -> platform mapping (used to check the zips) matches blender_ext.py's."""
    ext = be.find_blender_ext()[0]
    spec = importlib.util.spec_from_file_location("blender_ext_for_test", ext.script)
    blender_ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(blender_ext)
    names = sorted({p.name for p in (ROOT / ".venv" / "wheel-cache").rglob("*.whl")})
    assert len(names) >= 9
    for name in names:
        theirs = {p for p in PLATFORMS if blender_ext.blender_platform_compatible_with_wheel_platform_from_filepath(p, name)}
        assert be.blender_platforms_of_wheel(name) == theirs, name


def test_check_zip_rejects_a_foreign_wheel(tmp_path):
    """The build's own zip check fails loudly on a windows wheel inside the linux zip."""
    linux = "wheels/zeroconf-0.148.0-cp311-cp311-manylinux2014_x86_64.whl"
    windows = "wheels/zeroconf-0.148.0-cp311-cp311-win_amd64.whl"
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("__init__.py", "")
        zf.writestr("blender_manifest.toml", f'[build.generated]\nplatforms = ["linux-x64"]\nwheels = ["{linux}", "{windows}"]\n')
        zf.writestr(linux, b"x")
        zf.writestr(windows, b"x")
    with pytest.raises(be.BuildError, match="wheels inside"):
        be.check_zip(bad, "linux-x64", [linux, windows])


def test_the_package_copy_refuses_a_wire_folder_in_addon_and_a_missing_wire(tmp_path):
    addon = tmp_path / "addon"
    (addon / "wire").mkdir(parents=True)
    (addon / "__init__.py").write_text("")
    with pytest.raises(be.BuildError, match="wire clashes with the staged wire"):
        be.copy_package(tmp_path / "out", addon, be.WIRE_DIR)
    (addon / "wire").rmdir()
    with pytest.raises(be.BuildError, match="the extension ships the wire package"):
        be.copy_package(tmp_path / "out", addon, tmp_path / "no-wire")
    out = be.copy_package(tmp_path / "out", addon, be.WIRE_DIR)
    assert source_files(out) == {"__init__.py": b"", **wire_files()}  # no __pycache__ copied


def test_staged_manifest_refuses_a_manifest_that_already_lists_wheels():
    with pytest.raises(be.BuildError, match="must not set 'wheels'"):
        be.staged_manifest_text('id = "x"\nwheels = []\n', ["wheels/a-1-py3-none-any.whl"], ("linux-x64",))


INSTALL = textwrap.dedent("""
    import importlib, json, sys
    import bpy
    import addon_utils  # importable once bpy is
    bpy.ops.extensions.package_install_files(filepath=sys.argv[-1], repo="user_default", enable_on_install=True)
    mod = "bl_ext.user_default.zoomscape"
    wire = {name: importlib.import_module(f"{mod}.wire.{name}") for name in ("ply", "splats", "manifest", "names")}
    importers, splat_import = (importlib.import_module(f"{mod}.{m}") for m in ("importers", "splat_import"))
    print("RESULT " + json.dumps({"enabled": mod in bpy.context.preferences.addons,
                                  "loaded": list(addon_utils.check(mod)),
                                  "extensions": bpy.utils.user_resource("EXTENSIONS"),
                                  "wire": {name: m.__file__ for name, m in wire.items()},
                                  "uses_wire": [importers.PointCloud is wire["ply"].PointCloud,
                                                splat_import.Gaussians is wire["splats"].Gaussians],
                                  "format": wire["names"].FORMAT}))
""")
# A restarted Blender puts the extensions' .local site-packages ahead of every other site-packages.
IMPORT = textwrap.dedent("""
    import json, sys, bpy
    import zeroconf, ifaddr
    from zeroconf import _cache  # compiled (Cython) module: proves the wheel matches this CPython
    print("RESULT " + json.dumps({"zeroconf": zeroconf.__file__, "version": zeroconf.__version__,
                                  "compiled": _cache.__file__, "ifaddr": ifaddr.__file__,
                                  "has_browser": hasattr(zeroconf, "ServiceBrowser"),
                                  "python": list(sys.version_info[:2])}))
""")


def run_bpy(python: Path, code: str, user_dir: Path, *args: str) -> dict:
    """Run `code` in a headless bpy process with its own Blender user dirs; return its RESULT json."""
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(user_dir), "HOME": str(user_dir)}
    proc = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, timeout=300, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"bpy run failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.mark.parametrize("env_name", sorted(BPY_ENVS))
def test_linux_zip_installs_enables_and_imports_bundled_zeroconf(built, manifest_info, env_name, tmp_path):
    python = ROOT / ".venv" / env_name / "bin" / "python"
    assert python.exists(), f"{python} missing: run scripts/setup"
    want_python, _ = BPY_ENVS[env_name]
    user_dir = tmp_path / "blender-user"

    installed = run_bpy(python, INSTALL, user_dir, str(zip_path(built[0], manifest_info, "linux-x64")))
    assert installed["enabled"] and installed["loaded"] == [True, True], installed
    # the installed extension imports its own copy of the wire package, and its modules use it
    ext_dir = Path(installed["extensions"]) / "user_default" / "zoomscape"
    for name, path in installed["wire"].items():
        assert Path(path) == ext_dir / "wire" / f"{name}.py", installed["wire"]
        assert Path(path).read_bytes() == (ROOT / "backend" / "zoomscape" / "wire" / f"{name}.py").read_bytes()
    assert installed["uses_wire"] == [True, True] and installed["format"] == "zoomscape-results"
    site = Path(installed["extensions"]) / ".local" / "lib" / f"python{want_python[0]}.{want_python[1]}" / "site-packages"
    assert (site / "zeroconf").is_dir() and (site / "ifaddr").is_dir(), f"wheels not installed in {site}"

    imported = run_bpy(python, IMPORT, user_dir)
    assert tuple(imported["python"]) == want_python
    assert Path(imported["zeroconf"]).is_relative_to(site), imported
    assert Path(imported["ifaddr"]).is_relative_to(site), imported
    assert imported["version"] == be.ZEROCONF_VERSION and imported["has_browser"]
    cp = f"cpython-{want_python[0]}{want_python[1]}-x86_64-linux-gnu.so"
    assert imported["compiled"].endswith(cp), imported["compiled"]
