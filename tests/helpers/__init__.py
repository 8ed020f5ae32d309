"""Test helpers shared by the backend, end-to-end and Blender tests (standard library only).

``job_request()`` builds a valid request of docs/API.md: small cameras that translate sideways (and
turn a little) over the procedural world. ``BAD_REQUESTS`` lists one broken request per rule of the
API table, with the field its error must name.
"""
from __future__ import annotations

import copy
import math


def camera_matrix(x: float, y: float, z: float, tilt_deg: float = 75.0, yaw_deg: float = 0.0) -> list[list[float]]:
    """Blender matrix_world of a camera at (x, y, z) that looks toward +Y, tilted down from the horizon
    by (90 − tilt_deg) degrees and turned left by yaw_deg (rotation Z(yaw) · X(tilt))."""
    t, a = math.radians(tilt_deg), math.radians(yaw_deg)
    ct, st, ca, sa = math.cos(t), math.sin(t), math.cos(a), math.sin(a)
    Rx = [[1, 0, 0], [0, ct, -st], [0, st, ct]]
    Rz = [[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]]
    R = [[sum(Rz[i][k] * Rx[k][j] for k in range(3)) for j in range(3)] for i in range(3)]
    return [R[0] + [x], R[1] + [y], R[2] + [z], [0.0, 0.0, 0.0, 1.0]]


def camera(name: str, x: float = 0.0, y: float = -6.0, z: float = 1.6, *, size: int = 96,
           yaw_deg: float = 0.0, tilt_deg: float = 75.0, focal: float = None) -> dict:
    """One wire camera of size×size pixels (about 60° field of view unless focal is given)."""
    f = focal if focal is not None else size / (2 * math.tan(math.radians(30)))
    return {"name": name, "matrix_world": camera_matrix(x, y, z, tilt_deg, yaw_deg),
            "fx": f, "fy": f, "cx": size / 2, "cy": size / 2, "width": size, "height": size}


def job_request(n_cameras: int = 3, *, size: int = 96, step: float = 0.4, seed: int = 7,
                prompt: str = "a misty harbour town at dawn", levels=("a lit window", "a cat on the sill")) -> dict:
    """A valid request: n cameras side by side (translating by step metres, turning 4° each)."""
    cams = [camera(f"Cam.{i:03d}", x=(i - (n_cameras - 1) / 2) * step, size=size, yaw_deg=4.0 * (i - (n_cameras - 1) / 2))
            for i in range(n_cameras)]
    return {"engine": "procedural", "seed": seed, "scene_prompt": prompt, "cameras": cams,
            "zoom": {"camera": cams[0]["name"], "factor": 4.0, "levels": [{"prompt": p} for p in levels],
                     "anchor": None, "mode": "lens"},
            "init_rgbd": None}


def user_views(manifest: dict, request: dict) -> list[str]:
    """The manifest's views as the user's cameras: asserts they come first, in the request's order
    and not flagged extra, and that every later view is an extra one → their camera names."""
    views = manifest["views"]
    n = len(request["cameras"])
    assert [v["camera"] for v in views[:n]] == [c["name"] for c in request["cameras"]]
    assert [v["extra"] for v in views] == [False] * n + [True] * (len(views) - n)
    return [v["camera"] for v in views[:n]]


def _set(path, value):
    def apply(req):
        target = req
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return apply


def _scaled(req):
    req["cameras"][0]["matrix_world"] = [[v * 1.1 if j < 3 and i < 3 else v for j, v in enumerate(row)]
                                         for i, row in enumerate(req["cameras"][0]["matrix_world"])]


def _mirrored(req):
    for row in req["cameras"][0]["matrix_world"][:3]:
        row[0] = -row[0]


def _sheared(req):
    req["cameras"][0]["matrix_world"][0][1] += 0.01


def _duplicate(req):
    req["cameras"][1]["name"] = req["cameras"][0]["name"]


def _many_cameras(req):
    req["cameras"] = [camera(f"C{i:02d}", x=0.01 * i) for i in range(65)]
    req["zoom"]["camera"] = "C00"


# (label, mutate(request), field the error must name, words the message must contain)
BAD_REQUESTS = [
    ("no cameras", _set(["cameras"], []), "cameras", "at least 1"),
    ("65 cameras", _many_cameras, "cameras", "at most 64"),
    ("duplicate camera names", _duplicate, "cameras[1].name", "duplicate"),
    ("NaN in matrix", _set(["cameras", 0, "matrix_world", 0, 3], float("nan")), "cameras[0].matrix_world[0][3]", "finite"),
    ("infinite matrix", _set(["cameras", 2, "matrix_world", 1, 1], float("inf")), "cameras[2].matrix_world[1][1]", "finite"),
    ("scaled matrix", _scaled, "cameras[0].matrix_world", "orthonormal"),
    ("sheared matrix", _sheared, "cameras[0].matrix_world", "orthonormal"),
    ("mirrored matrix", _mirrored, "cameras[0].matrix_world", "determinant"),
    ("bad last row", _set(["cameras", 1, "matrix_world", 3], [0.0, 0.0, 0.5, 1.0]), "cameras[1].matrix_world", "last row"),
    ("3x4 matrix", lambda r: r["cameras"][0]["matrix_world"].pop(), "cameras[0].matrix_world", "at least 4"),
    ("width too large", _set(["cameras", 0, "width"], 4096), "cameras[0].width", "2048"),
    ("width too small", _set(["cameras", 1, "width"], 63), "cameras[1].width", "64"),
    ("height too small", _set(["cameras", 2, "height"], 32), "cameras[2].height", "64"),
    ("zero focal length", _set(["cameras", 0, "fx"], 0.0), "cameras[0].fx", "greater than 0"),
    ("empty scene prompt", _set(["scene_prompt"], ""), "scene_prompt", "empty"),
    ("blank scene prompt", _set(["scene_prompt"], "   \n"), "scene_prompt", "blank"),
    ("2000-char scene prompt", _set(["scene_prompt"], "x" * 2000), "scene_prompt", "1999"),
    ("empty level prompt", _set(["zoom", "levels", 1, "prompt"], ""), "zoom.levels[1].prompt", "empty"),
    ("2000-char level prompt", _set(["zoom", "levels", 0, "prompt"], "y" * 2000), "zoom.levels[0].prompt", "1999"),
    ("zoom factor too big", _set(["zoom", "factor"], 8.5), "zoom.factor", "8"),
    ("zoom factor too small", _set(["zoom", "factor"], 1.2), "zoom.factor", "1.5"),
    ("no levels", _set(["zoom", "levels"], []), "zoom.levels", "at least 1"),
    ("17 levels", _set(["zoom", "levels"], [{"prompt": f"level {i}"} for i in range(17)]), "zoom.levels", "at most 16"),
    ("zoom camera unknown", _set(["zoom", "camera"], "Nope"), "zoom.camera", "not one of the cameras"),
    ("anchor not 3 numbers", _set(["zoom", "anchor"], [1.0, 2.0]), "zoom.anchor", "at least 3"),
    ("unknown engine", _set(["engine"], "magic"), "engine", "procedural"),
    ("unknown field", _set(["colour"], "red"), "colour", "unknown field"),
    ("unknown camera field", _set(["cameras", 0, "lens"], 50), "cameras[0].lens", "unknown field"),
    ("init_rgbd without its fields", _set(["init_rgbd"], {"rgb": []}), "init_rgbd.camera", "required"),
    ("negative seed", _set(["seed"], -1), "seed", "at least 0"),
    ("seed too large", _set(["seed"], 2**32), "seed", "4294967296"),
    ("missing zoom", lambda r: r.pop("zoom"), "zoom", "required"),
]


def bad_request(mutate) -> dict:
    """A valid job_request() broken by mutate."""
    req = copy.deepcopy(job_request())
    mutate(req)
    return req
