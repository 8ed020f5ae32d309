"""The licence: LICENSE at the repository root is the GNU GPL version 3 text, and the extension
manifest and the backend's package metadata both name GPL-3.0-or-later."""
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_license_file_is_the_gpl_3_text():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines()]
    assert lines[:2] == ["GNU GENERAL PUBLIC LICENSE", "Version 3, 29 June 2007"]
    for words in ("TERMS AND CONDITIONS", "0. Definitions.", "15. Disclaimer of Warranty.",
                  "17. Interpretation of Sections 15 and 16.", "END OF TERMS AND CONDITIONS",
                  "How to Apply These Terms to Your New Programs",
                  "either version 3 of the License, or", "(at your option) any later version."):
        assert words in text, words
    assert 30_000 < len(text) < 40_000 and len(lines) == 674


def test_manifest_and_pyproject_name_gpl_3_or_later():
    manifest = tomllib.loads((REPO / "blender_manifest.toml").read_text(encoding="utf-8"))
    assert manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    project = tomllib.loads((REPO / "backend" / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "GPL-3.0-or-later"
    assert not any(c.startswith("License ::") for c in project.get("classifiers", []))  # PEP 639: not both


def test_installed_package_metadata_names_the_licence():
    assert metadata.metadata("zoomscape")["License-Expression"] == "GPL-3.0-or-later"
