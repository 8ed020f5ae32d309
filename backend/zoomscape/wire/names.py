"""Names and limits both sides of the wire spell: the request's limits, model roles, engine names,
the zeroconf service, the results' file names and the manifest's format tag (docs/API.md).

stdlib only. The backend's schema.py builds its rules from these numbers; the extension checks
the same numbers before it sends a request.
"""
from __future__ import annotations

# ---------------------------------------------------------------- the request
ENGINE_NAMES = ("procedural", "diffusers")
MODEL_ROLES = ("text2img", "inpaint", "depth")  # request "models" keys
MAX_CAMERAS = 64
MIN_RESOLUTION, MAX_RESOLUTION = 64, 2048
MAX_PROMPT_CHARS = 1999
MAX_NAME_CHARS = 63
MAX_MODEL_CHARS = 500
ZOOM_FACTOR_RANGE = (1.5, 8.0)
MAX_LEVELS = 16
SEED_LIMIT = 2**32
MAX_EXTRA_VIEWS = 16   # extra_views: views dreamed beyond the user's cameras (0 = off)
MIN_KNOWN_PIXELS = 16  # init_rgbd: fewer pixels with depth cannot anchor a world (nor fit a scale)

# ---------------------------------------------------------------- the network
SERVICE_TYPE = "_zoomscape._tcp.local."  # zeroconf
API_PATH = "/v1"
DEFAULT_PORT = 8765

# ---------------------------------------------------------------- the results
FORMAT = "zoomscape-results"  # manifest.json "format"
FORMAT_VERSION = 1            # manifest.json "version"
MANIFEST_FILE = "manifest.json"
POINTCLOUD_FILE = "pointcloud.ply"
WORLD_FILE = "world.ply"  # the world as 3D Gaussians (Inria 3DGS layout), next to the point cloud
LEVEL_IMAGE = "level_{:02d}.png"
LEVEL_GAUSSIANS = "level_{:02d}.ply"
STACK_FILE = "zoom_stack.png"


def level_image(i: int) -> str:
    """The PNG of zoom level i: level_NN.png."""
    return LEVEL_IMAGE.format(i)


def level_gaussians(i: int) -> str:
    """The 3DGS PLY of zoom level i: level_NN.ply."""
    return LEVEL_GAUSSIANS.format(i)
