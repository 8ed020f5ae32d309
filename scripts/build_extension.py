"""Build Zoomscape's installable Blender extension zips, one per platform.

This module holds the whole build: fetching the pinned, unmodified PyPI wheels of zeroconf (CPython
3.11 and 3.13, per platform) and ifaddr (pure Python) into a cache, staging
`blender_manifest.toml` + `addon/*` + `wire/` (a copy of backend/zoomscape/wire, the numpy-only wire
format both sides share; the extension imports it as `.wire`) + `wheels/` in a temporary directory
(the staged manifest gains `wheels = [...]` and `platforms = [...]`; the repository's manifest is
never touched), running
Blender's own `blender_ext.py build --split-platforms`, checking every zip holds exactly its
platform's wheels, and running `blender_ext.py validate` on every zip with every Blender line found.

Blender 4.2-5.0 embed Python 3.11 and 5.1+ embed 3.13, so each platform zip carries both CPython
builds of zeroconf; Blender installs the one matching its Python into its extensions'
`.local/lib/pythonX.Y/site-packages`. Nothing is pip-installed inside Blender at run time.

Run it through `scripts/build_extension` (any Python >= 3.11 with pip works; no bpy import needed).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADDON_DIR = ROOT / "addon"
WIRE_DIR = ROOT / "backend" / "zoomscape" / "wire"  # staged as <extension>/wire

# zeroconf 0.149+ publish no macOS x86_64 wheels; 0.148.0 is the newest release with cp311 and
# cp313 wheels for all four platforms below.
ZEROCONF_VERSION = "0.148.0"
IFADDR_VERSION = "0.2.0"
PYTHON_VERSIONS = ("3.11", "3.13")

# Blender platform -> pip `--platform` tag. pip expands each tag to the older compatible ones
# (manylinux_2_28 also accepts manylinux2014; macosx_11_0 also accepts macosx_10_9), which matches
# what Blender 4.2+ itself requires (glibc 2.28, macOS 11).
PIP_PLATFORMS = {
    "linux-x64": "manylinux_2_28_x86_64",
    "windows-x64": "win_amd64",
    "macos-arm64": "macosx_11_0_arm64",
    "macos-x64": "macosx_11_0_x86_64",
}
PLATFORMS = tuple(PIP_PLATFORMS)

# Never staged from addon/ or the wire package (blender_ext.py also skips __pycache__/ and
# dot-files; this keeps the staging dir itself clean).
IGNORED = ("__pycache__", "*.pyc", "*.pyo", ".*", "*.blend1", "*.zip", "*.whl")
# Names the staging adds next to addon/*: addon/ must not have them.
RESERVED = ("blender_manifest.toml", "wheels", "wire")

BLENDER_EXT_GLOB = "bpy*/lib/python3.*/site-packages/bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py"


class BuildError(RuntimeError):
    """A build step failed; the message says which and why."""


@dataclass(frozen=True)
class BlenderExt:
    """Blender's extension CLI (`blender_ext.py`) and the Python to run it with."""

    python: Path
    script: Path

    @property
    def blender_version(self) -> str:
        """'4.2' for .../bpy/4.2/scripts/..."""
        return self.script.parents[4].name


# ---------------------------------------------------------------- wheel names


def wheel_tags(filename: str) -> tuple[str, str, str, str, str]:
    """Split a wheel filename into (distribution, version, python tag, abi tag, platform tag).

    The optional build tag is dropped. Raises BuildError for a name that is not a wheel name.
    """
    if not filename.endswith(".whl"):
        raise BuildError(f"wheel filename must end with .whl, got {filename!r}")
    parts = filename[: -len(".whl")].split("-")
    if not 5 <= len(parts) <= 6:
        raise BuildError(f"wheel filename must have 5 or 6 '-'-separated fields, got {filename!r}")
    return parts[0], parts[1], parts[-3], parts[-2], parts[-1]


def blender_platforms_of_wheel(filename: str) -> set[str]:
    """The Blender platforms (of PLATFORMS) a wheel runs on, from its platform tag.

    'any' -> all; compressed tags ('manylinux2014_x86_64.manylinux_2_28_x86_64') are unioned.
    """
    platform_tag = wheel_tags(filename)[4]
    if platform_tag == "any":
        return set(PLATFORMS)
    found: set[str] = set()
    for tag in platform_tag.split("."):
        if tag.startswith(("manylinux", "linux_")) and tag.endswith("_x86_64"):
            found.add("linux-x64")
        elif tag == "win_amd64":
            found.add("windows-x64")
        elif tag.startswith("macosx_") and tag.endswith("_arm64"):
            found.add("macos-arm64")
        elif tag.startswith("macosx_") and tag.endswith("_x86_64"):
            found.add("macos-x64")
        elif tag.startswith("macosx_") and tag.endswith("_universal2"):
            found |= {"macos-arm64", "macos-x64"}
    return found


def cpython_tag(python_version: str) -> str:
    """'3.11' -> 'cp311'."""
    major, minor = python_version.split(".")
    return f"cp{major}{minor}"


def expected_wheels(wheels: list[str], platform: str) -> list[str]:
    """The subset of `wheels` (names or 'wheels/name' paths) that belongs in `platform`'s zip."""
    return sorted(w for w in wheels if platform in blender_platforms_of_wheel(w.rsplit("/", 1)[-1]))


# ---------------------------------------------------------------- fetching


def pip_download(python: Path, dest: Path, requirement: str, extra: list[str]) -> None:
    """`python -m pip download --only-binary=:all: --no-deps requirement -d dest extra...`."""
    cmd = [str(python), "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
           "--only-binary=:all:", "--no-deps", "--dest", str(dest), *extra, requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
        raise BuildError(
            f"pip download of {' '.join([requirement, *extra])} failed (exit {proc.returncode}); "
            f"is the network (PyPI) reachable? Once fetched, the wheel is reused from {dest}.\n{tail}"
        )


def fetch_one(python: Path, dest: Path, requirement: str, extra: list[str], offline: bool) -> Path:
    """Return the single wheel cached in `dest`, downloading it first if `dest` holds none."""
    found = sorted(dest.glob("*.whl"))
    if not found:
        if offline:
            raise BuildError(f"--offline: no cached wheel for {' '.join([requirement, *extra])} in {dest}")
        dest.mkdir(parents=True, exist_ok=True)
        pip_download(python, dest, requirement, extra)
        found = sorted(dest.glob("*.whl"))
    if len(found) != 1:
        raise BuildError(f"expected exactly one wheel in {dest}, found {[p.name for p in found]}")
    return found[0]


def fetch_wheels(cache_dir: Path, python: Path = Path(sys.executable), offline: bool = False) -> list[Path]:
    """Fetch (or reuse from `cache_dir`) every wheel the extension bundles.

    Returns: the ifaddr wheel + one zeroconf wheel per (platform, CPython) in PLATFORMS x
    PYTHON_VERSIONS, each checked to carry the tags it was fetched for.
    """
    ifaddr = fetch_one(python, cache_dir / f"ifaddr-{IFADDR_VERSION}", f"ifaddr=={IFADDR_VERSION}", [], offline)
    if wheel_tags(ifaddr.name)[4] != "any":
        raise BuildError(f"ifaddr must be a pure-Python wheel, got {ifaddr.name}")
    wheels = [ifaddr]
    for platform, pip_platform in PIP_PLATFORMS.items():
        for python_version in PYTHON_VERSIONS:
            cp = cpython_tag(python_version)
            dest = cache_dir / f"zeroconf-{ZEROCONF_VERSION}" / platform / cp
            extra = ["--platform", pip_platform, "--python-version", python_version,
                     "--implementation", "cp", "--abi", cp]
            wheel = fetch_one(python, dest, f"zeroconf=={ZEROCONF_VERSION}", extra, offline)
            dist, version, py_tag, abi_tag, _ = wheel_tags(wheel.name)
            if (dist, version, py_tag, abi_tag) != ("zeroconf", ZEROCONF_VERSION, cp, cp):
                raise BuildError(f"{dest}: expected zeroconf-{ZEROCONF_VERSION}-{cp}-{cp}-*.whl, got {wheel.name}")
            if blender_platforms_of_wheel(wheel.name) != {platform}:
                raise BuildError(f"{wheel.name} does not map to exactly Blender platform {platform}")
            wheels.append(wheel)
    return wheels


# ---------------------------------------------------------------- staging


def staged_manifest_text(manifest_text: str, wheels_rel: list[str], platforms: tuple[str, ...]) -> str:
    """The repository manifest with top-level `wheels` and `platforms` lists added.

    They go right before the first [table] header (TOML top-level keys must precede tables).
    Raises BuildError if the repository manifest already sets either key.
    """
    data = tomllib.loads(manifest_text)
    for key in ("wheels", "platforms"):
        if key in data:
            raise BuildError(f"blender_manifest.toml must not set {key!r}: scripts/build_extension adds it")
    lines = manifest_text.splitlines(keepends=True)
    first_table = next((i for i, line in enumerate(lines) if re.match(r"\s*\[", line)), len(lines))
    block = (
        "# Added by scripts/build_extension (staged copy only).\n"
        + "platforms = [" + ", ".join(f'"{p}"' for p in platforms) + "]\n"
        + "wheels = [\n" + "".join(f'  "{w}",\n' for w in wheels_rel) + "]\n\n"
    )
    if lines and first_table == len(lines) and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    text = "".join(lines[:first_table]) + block + "".join(lines[first_table:])
    staged = tomllib.loads(text)  # must still parse, with exactly what we added
    if staged.get("wheels") != wheels_rel or tuple(staged.get("platforms", ())) != platforms:
        raise BuildError("internal error: staged manifest does not carry the wheels/platforms lists")
    return text


def copy_package(dest: Path, addon_dir: Path = ADDON_DIR, wire_dir: Path = WIRE_DIR) -> Path:
    """Copy the extension's Python package into `dest`: addon_dir/* at the top, wire_dir as `wire/`.

    The extension's sources as users get them (the tests stage the same copy). Raises BuildError
    when addon_dir has no __init__.py, wire_dir no __init__.py, or addon_dir holds a RESERVED name.
    """
    addon_dir, wire_dir, dest = Path(addon_dir), Path(wire_dir), Path(dest)
    if not (addon_dir / "__init__.py").is_file():
        raise BuildError(f"{addon_dir / '__init__.py'} not found: the extension package needs it")
    if not (wire_dir / "__init__.py").is_file():
        raise BuildError(f"{wire_dir / '__init__.py'} not found: the extension ships the wire package")
    for reserved in RESERVED:
        if (addon_dir / reserved).exists():
            raise BuildError(f"{addon_dir / reserved} clashes with the staged {reserved}; remove it from addon/")
    shutil.copytree(addon_dir, dest, ignore=shutil.ignore_patterns(*IGNORED), dirs_exist_ok=True)
    shutil.copytree(wire_dir, dest / "wire", ignore=shutil.ignore_patterns(*IGNORED))
    return dest


def stage(stage_dir: Path, addon_dir: Path, manifest: Path, wheels: list[Path],
          wire_dir: Path = WIRE_DIR) -> Path:
    """Fill `stage_dir` with addon_dir/* + wire/ + blender_manifest.toml + wheels/*.whl; return it.

    The staged manifest lists 'wheels/<name>' for every wheel and all PLATFORMS.
    """
    copy_package(stage_dir, addon_dir, wire_dir)
    (stage_dir / "wheels").mkdir()
    for wheel in wheels:
        shutil.copy2(wheel, stage_dir / "wheels" / wheel.name)  # unmodified bytes
    wheels_rel = sorted(f"wheels/{w.name}" for w in wheels)
    text = staged_manifest_text(manifest.read_text(encoding="utf-8"), wheels_rel, PLATFORMS)
    (stage_dir / "blender_manifest.toml").write_text(text, encoding="utf-8")
    return stage_dir


# ---------------------------------------------------------------- Blender's CLI


def find_blender_ext(venvs: Path = ROOT / ".venv") -> list[BlenderExt]:
    """Every `blender_ext.py` in the project's bpy environments, oldest Blender first."""
    found = []
    for script in sorted(venvs.glob(BLENDER_EXT_GLOB)):
        venv = script.parents[9]  # .venv/bpyXX/lib/pythonX.Y/site-packages/bpy/V/scripts/addons_core/bl_pkg/cli
        python = venv / "bin" / "python"
        found.append(BlenderExt(python if python.exists() else Path(sys.executable), script))
    return sorted(found, key=lambda b: tuple(int(x) for x in b.blender_version.split(".")))


def run_blender_ext(ext: BlenderExt, args: list[str]) -> subprocess.CompletedProcess:
    """Run `python blender_ext.py args...`, capturing output."""
    return subprocess.run([str(ext.python), str(ext.script), *args], capture_output=True, text=True)


def zip_name(ext_id: str, version: str, platform: str) -> str:
    """Blender's split-platform archive name: zoomscape-0.1.0-linux_x64.zip."""
    return f"{ext_id}-{version}-{platform.replace('-', '_')}.zip"


def generated_manifest(zf: zipfile.ZipFile) -> dict:
    """The zip's blender_manifest.toml with [build.generated] swapped in, as Blender reads it."""
    data = tomllib.loads(zf.read("blender_manifest.toml").decode("utf-8"))
    generated = data.get("build", {}).get("generated", {})
    return {**data, **{k: generated[k] for k in ("wheels", "platforms") if k in generated}}


def check_zip(path: Path, platform: str, wheels_all: list[str]) -> None:
    """Raise BuildError unless the zip holds exactly `platform`'s wheels and its manifest lists them."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        inside = sorted(n for n in names if n.endswith(".whl"))
        manifest = generated_manifest(zf)
    want = expected_wheels(wheels_all, platform)
    if inside != want:
        raise BuildError(f"{path.name}: wheels inside {inside} != expected for {platform} {want}")
    if sorted(manifest.get("wheels", [])) != inside:
        raise BuildError(f"{path.name}: manifest wheels {manifest.get('wheels')} != wheels inside {inside}")
    if manifest.get("platforms") != [platform]:
        raise BuildError(f"{path.name}: manifest platforms {manifest.get('platforms')} != [{platform!r}]")
    if ("__init__.py" not in names or "wire/__init__.py" not in names
            or any("__pycache__" in n or n.endswith(".pyc") for n in names)):
        raise BuildError(f"{path.name}: needs a top-level __init__.py, wire/__init__.py and no "
                         f"__pycache__/.pyc, has {names}")


def build(
    output_dir: Path = ROOT / "dist",
    *,
    addon_dir: Path = ADDON_DIR,
    wire_dir: Path = WIRE_DIR,
    manifest: Path = ROOT / "blender_manifest.toml",
    cache_dir: Path = ROOT / ".venv" / "wheel-cache",
    offline: bool = False,
    exts: list[BlenderExt] | None = None,
) -> list[Path]:
    """Build, check and validate one zip per platform in `output_dir`; return their paths (PLATFORMS order).

    Built with the oldest Blender's blender_ext.py; validated with every one in `exts`.
    """
    exts = find_blender_ext() if exts is None else exts
    if not exts:
        raise BuildError(f"no blender_ext.py found under {ROOT / '.venv'} (run scripts/setup first)")
    info = tomllib.loads(manifest.read_text(encoding="utf-8"))
    wheels = fetch_wheels(cache_dir, offline=offline)
    output_dir.mkdir(parents=True, exist_ok=True)
    zips = [output_dir / zip_name(info["id"], info["version"], p) for p in PLATFORMS]
    for z in zips:
        z.unlink(missing_ok=True)  # never report a stale zip as built

    with tempfile.TemporaryDirectory(prefix="zoomscape-stage-") as tmp:
        stage_dir = stage(Path(tmp) / info["id"], addon_dir, manifest, wheels, wire_dir)
        proc = run_blender_ext(exts[0], ["build", "--source-dir", str(stage_dir),
                                         "--output-dir", str(output_dir), "--split-platforms"])
        if proc.returncode != 0 or not all(z.is_file() for z in zips):
            raise BuildError(f"blender_ext.py {exts[0].blender_version} build failed "
                             f"(exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")

    wheels_rel = [f"wheels/{w.name}" for w in wheels]
    failures = []
    for z, platform in zip(zips, PLATFORMS):
        check_zip(z, platform, wheels_rel)
        for ext in exts:
            proc = run_blender_ext(ext, ["validate", str(z)])
            if proc.returncode != 0:
                failures.append(f"{z.name} (Blender {ext.blender_version} validate, exit {proc.returncode}):\n"
                                f"{proc.stdout}{proc.stderr}")
    if failures:
        raise BuildError("validate failed for:\n" + "\n".join(failures))
    return zips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build_extension", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=ROOT / "dist", help="where the zips go (default: dist/)")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".venv" / "wheel-cache",
                        help="wheel download cache (default: .venv/wheel-cache)")
    parser.add_argument("--addon-dir", type=Path, default=ADDON_DIR, help="extension package (default: addon/)")
    parser.add_argument("--wire-dir", type=Path, default=WIRE_DIR,
                        help="wire package staged as wire/ (default: backend/zoomscape/wire)")
    parser.add_argument("--manifest", type=Path, default=ROOT / "blender_manifest.toml")
    parser.add_argument("--offline", action="store_true", help="use only cached wheels, never the network")
    args = parser.parse_args(argv)
    exts = find_blender_ext()
    try:
        zips = build(args.output_dir.resolve(), addon_dir=args.addon_dir.resolve(),
                     wire_dir=args.wire_dir.resolve(), manifest=args.manifest.resolve(),
                     cache_dir=args.cache_dir.resolve(), offline=args.offline, exts=exts)
    except BuildError as ex:
        print(f"build_extension: FAILED: {ex}", file=sys.stderr)
        return 1
    versions = ", ".join(e.blender_version for e in exts)
    print(f"build_extension: built and validated (Blender {versions}), zeroconf {ZEROCONF_VERSION} "
          f"cp311+cp313 + ifaddr {IFADDR_VERSION}:")
    for z in zips:
        print(f"  {z}  {z.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
