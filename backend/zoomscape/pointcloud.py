"""Coloured point clouds: φ2→3 unprojection, z-buffered φ3→2 projection, merging, voxel
downsampling and the binary PLY point-cloud format of the wire (docs/API.md).

Points live in world coordinates (Blender's world, metres); cameras speak OpenCV through
``zoomscape.cameras``. Every operation is vectorised over the points: no per-point Python loops.

φ2→3 (LucidDreamer): a pixel (u, v) with z-depth z becomes the world point
    X = c2w · (z · K⁻¹ [u, v, 1]ᵀ).
φ3→2 renders a cloud into a camera as image Î, mask M (covered pixels), depth and the index of
the visible point. Each point is a small square splat the size of the pixel it came from, and
the nearest splat wins every pixel (a z-buffer), so a surface hides whatever lies behind it
even from a new viewpoint.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cameras import Camera, pixel_grid, pixels_to_world, world_to_pixels
from .wire.ply import POINT_DTYPE as PLY_DTYPE  # noqa: F401 (the layout, for tests)
from .wire.ply import PointCloud, read_point_ply
from .wire.ply import write_point_ply as write_ply  # noqa: F401 (atomic; x y z, rgb uchar, radius)

# Half the diagonal of a unit pixel: a point's radius is this many pixel sizes at its depth, so
# splats of neighbouring pixels touch diagonally and overlap along the rows and columns.
FOOTPRINT_PX = float(np.sqrt(0.5))


@dataclass
class Projection:
    """φ3→2 of a cloud into one camera (H×W = the camera's resolution).

    image: [H, W, 3] float32 (0 where empty); mask: [H, W] bool (pixel covered by a point);
    depth: [H, W] float32 z-depth of the nearest point (+inf where empty);
    index: [H, W] int64 index of the winning point in the cloud (-1 where empty).
    """

    image: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    index: np.ndarray


def footprint_radius(cam: Camera, z: np.ndarray) -> np.ndarray:
    """World radius of a pixel's footprint at z-depths z: [N] → [N].

    r = z · √½ / f with f = √(fx·fy): half the pixel diagonal, so splats of neighbouring pixels
    leave no gaps.
    """
    f = np.sqrt(cam.K[0, 0] * cam.K[1, 1])
    return (np.asarray(z, dtype=np.float64) * (FOOTPRINT_PX / f)).astype(np.float32)


def footprint_ratio(cam: Camera, radius: np.ndarray, z: np.ndarray) -> np.ndarray:
    """How many of cam's pixel footprints splats of world radius [N] span at z-depths z [N] in cam:
    radius·f / (z·√½), the inverse of footprint_radius (1 for a point cam itself lifted). → [N]."""
    f = np.sqrt(cam.K[0, 0] * cam.K[1, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(radius, np.float64) * (f / FOOTPRINT_PX) / np.asarray(z, np.float64)


def _check_image(cam: Camera, name: str, a: np.ndarray, trailing: tuple) -> None:
    want = (cam.height, cam.width) + trailing
    if a.shape != want:
        raise ValueError(f"{name}: shape {a.shape} does not match camera '{cam.name}' "
                         f"({cam.width}×{cam.height}), expected {want}")


def unproject(cam: Camera, image: np.ndarray, depth: np.ndarray, mask: np.ndarray | None = None
              ) -> PointCloud:
    """φ2→3: lift pixels to world points.

    image: [H, W, 3] in [0, 1]; depth: [H, W] z-depth; mask: [H, W] bool or None (all pixels).
    Pixels where mask is True and depth is finite and > 0 become points at their pixel centres
    (u = j + 0.5, v = i + 0.5), in row-major order. Returns a PointCloud of those pixels.
    """
    image = np.asarray(image)
    depth = np.asarray(depth, dtype=np.float64)
    _check_image(cam, "image", image, (3,))
    _check_image(cam, "depth", depth, ())
    keep = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        _check_image(cam, "mask", mask, ())
        keep &= mask
    flat = np.flatnonzero(keep)
    uv = pixel_grid(cam.width, cam.height)[flat]
    z = depth.reshape(-1)[flat]
    xyz = pixels_to_world(cam, uv, z)
    rgb = image.reshape(-1, 3)[flat]
    return PointCloud(xyz, rgb, footprint_radius(cam, z))


def _splat_spans(c: np.ndarray, r: np.ndarray, size: int, clip: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel span [lo, hi] along one axis covered by splats at continuous positions c: [N] with
    half-extents r: [N] (pixels). A pixel is covered when its centre lies within r of c; the pixel
    containing c always is. clip: spans are clipped to [0, size-1] (empty when lo > hi).
    """
    home = np.floor(c)
    lo = np.minimum(np.ceil(c - r - 0.5), home)
    hi = np.maximum(np.floor(c + r - 0.5), home)
    if not clip:
        return lo.astype(np.int64), hi.astype(np.int64)
    return np.maximum(lo, 0).astype(np.int64), np.minimum(hi, size - 1).astype(np.int64)


def _fragments(W: int, j0: np.ndarray, i0: np.ndarray, nj: np.ndarray, ni: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Pixels covered by M splats with column spans j0 … j0+nj−1 and row spans i0 … i0+ni−1
    (all [M]) → (pix: [F] flat pixel index i·W + j, owner: [F] the splat of each), no loop."""
    rows = np.repeat(np.arange(len(ni)), ni)                 # one entry per row of each splat
    row = i0[rows] + np.arange(rows.size) - (np.cumsum(ni) - ni)[rows]
    n = nj[rows]
    before = np.cumsum(n) - n                                # fragments before each row
    owner = np.repeat(rows, n)
    return np.repeat(row * W + j0[rows] - before, n) + np.arange(owner.size), owner


FRAGMENT_CHUNK = 1 << 22  # fragments per batch: bounds project()'s memory for large splats


def _chunks(count: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Split splats with `count` fragments each ([M]) into consecutive [lo, hi) batches of about
    `budget` fragments."""
    cum = np.cumsum(count)
    if len(cum) == 0 or cum[-1] <= budget:
        return [(0, len(count))]
    cuts = np.unique(np.searchsorted(cum, np.arange(budget, cum[-1], budget), side="right"))
    edges = [0] + [int(c) for c in cuts if 0 < c < len(count)] + [len(count)]
    return list(zip(edges[:-1], edges[1:]))


def _half_extents(radius: np.ndarray, z: np.ndarray, cam: Camera, max_splat: float,
                  reach: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Splat half-extents in pixels (rx, ry), each [N]: min(reach · radius · f / z, max_splat),
    radius: [N] world radii (a non-finite or negative radius counts as 0: one pixel)."""
    r = radius.astype(np.float64)
    r = np.where(np.isfinite(r) & (r > 0), r, 0.0)
    if reach != 1.0:
        r = reach * r
    return np.minimum(r * cam.K[0, 0] / z, max_splat), np.minimum(r * cam.K[1, 1] / z, max_splat)


def project(cloud: PointCloud, cam: Camera, *, near: float = 1e-6, max_splat: float = 8.0,
            pixels: np.ndarray | None = None) -> Projection:
    """φ3→2 with a z-buffer: render the cloud into cam.

    Each point covers the pixels whose centres lie within its footprint, a square of half-extent
    radius·f/z pixels (at least its own pixel, at most max_splat pixels), and the nearest point wins
    each pixel (ties: the lower index). Points with z ≤ near·‖X_cam‖ (behind or beside the camera),
    non-finite points and splats entirely outside the image are ignored; a non-finite or negative
    radius counts as 0 (one pixel).
    pixels: None (every pixel), or [H, W] bool: render those pixels only, each exactly as the
    full projection renders it (the others come back empty): only their fragments enter the
    z-buffer.
    """
    H, W = cam.height, cam.width
    if pixels is not None:
        pixels = np.asarray(pixels, dtype=bool)
        _check_image(cam, "pixels", pixels, ())
    uv, z = world_to_pixels(cam, cloud.xyz)
    margin = max_splat + 2.0
    with np.errstate(invalid="ignore"):     # (a NaN or infinite uv fails these: finite)
        ok = (uv[:, 0] > -margin) & (uv[:, 0] < W + margin)
        ok &= (uv[:, 1] > -margin) & (uv[:, 1] < H + margin)
    pts = np.flatnonzero(ok)
    # z > near·‖X − c‖ on the points in the window only (the same value per point: one row each)
    with np.errstate(invalid="ignore"):
        front = z[pts] > near * np.linalg.norm(cloud.xyz[pts] - cam.center, axis=1)
    pts = pts[front]
    u, v, zp = uv[pts, 0], uv[pts, 1], z[pts]
    rx, ry = _half_extents(cloud.radius[pts], zp, cam, max_splat)
    j0, j1 = _splat_spans(u, rx, W)
    i0, i1 = _splat_spans(v, ry, H)
    nj, ni = j1 - j0 + 1, i1 - i0 + 1
    live = (nj > 0) & (ni > 0)
    pts, zp, j0, i0, nj, ni = pts[live], zp[live], j0[live], i0[live], nj[live], ni[live]

    def fragments(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        pix, owner = _fragments(W, j0[lo:hi], i0[lo:hi], nj[lo:hi], ni[lo:hi])
        if pixels is None:
            return pix, owner
        on = pixels.reshape(-1)[pix]
        return pix[on], owner[on]

    # z-buffer, in batches of fragments (one per covered pixel of each splat): first the nearest
    # depth per pixel, then the lowest point index among the fragments at that depth.
    batches = _chunks(nj * ni, FRAGMENT_CHUNK)
    zbuf = np.full(H * W, np.inf)
    frags = []
    for lo, hi in batches:
        pix, owner = fragments(lo, hi)
        np.minimum.at(zbuf, pix, zp[lo:hi][owner])
        frags.append((pix, owner) if len(batches) == 1 else None)
    none = np.iinfo(np.int64).max
    ibuf = np.full(H * W, none)
    for (lo, hi), f in zip(batches, frags):
        pix, owner = f if f is not None else fragments(lo, hi)
        win = zp[lo:hi][owner] == zbuf[pix]
        np.minimum.at(ibuf, pix[win], pts[lo:hi][owner[win]])
    covered = ibuf != none
    index = np.where(covered, ibuf, -1)

    image = np.zeros((H * W, 3), np.float32)
    image[covered] = cloud.rgb[index[covered]]
    return Projection(image=image.reshape(H, W, 3), mask=covered.reshape(H, W),
                      depth=zbuf.astype(np.float32).reshape(H, W), index=index.reshape(H, W))


# blend_front: how far each point's tent reaches, in its own footprint radii r (= half the pixel
# diagonal of the view that lifted it: its neighbours lie √2·r away, so √2 is bilinear
# interpolation on that view's grid), and how far behind a pixel's front depth a point may lie
# and still be its surface (relative: the depth noise and the bends of the views it came from)
BLEND_REACH = float(np.sqrt(2.0))
BLEND_DEPTH_TOL = 0.03


def blend_front(cloud: PointCloud, cam: Camera, proj: Projection, *, reach: float = BLEND_REACH,
                depth_tol: float = BLEND_DEPTH_TOL, max_splat: float = 8.0) -> np.ndarray:
    """The colours of proj's covered pixels resampled from every point of the front surface, not
    the z-buffer's one winner: [H, W, 3] float32 (proj.image where nothing blends; 0 where empty).

    proj: project(cloud, cam). Each point k spreads its colour over the pixels p within its tent,
    w_k(p) = max(0, 1 − |p_u − u_k| / ρ_u) · max(0, 1 − |p_v − v_k| / ρ_v), ρ_u = max(reach ·
    r_k·f_x / z_k, ½) pixels (ρ_v with f_y), and only onto pixels where nothing hides it, z_k ≤ (1 + depth_tol) ·
    proj.depth(p) (a surface behind the front one never shows; a nearer point whose tent reaches
    past its own footprint, at a silhouette or on a slope, weighs in like an anti-aliased edge);
    each pixel gets Σ w_k c_k / Σ w_k. A nearest-point z-buffer
    resamples a surface seen from another camera with a jitter of up to half a source pixel and
    aliases its texture; the tent (reach √2: bilinear interpolation on the source view's own
    grid, whose points lie √2·r apart) interpolates instead. From the camera that lifted them,
    the points sit on the pixel centres 1 px apart and each tent (ρ = 1 px) is 0 at its
    neighbours' centres: the image comes back unchanged. Vectorised over fragments in batches,
    like project().
    """
    H, W = cam.height, cam.width
    uv, z = world_to_pixels(cam, cloud.xyz)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(z) & (z > 0) & np.isfinite(uv).all(axis=1)
        ok &= (uv[:, 0] > -max_splat - 2) & (uv[:, 0] < W + max_splat + 2)
        ok &= (uv[:, 1] > -max_splat - 2) & (uv[:, 1] < H + max_splat + 2)
    pts = np.flatnonzero(ok)
    u, v, zp = uv[pts, 0], uv[pts, 1], z[pts]
    rho_u, rho_v = (np.maximum(r, 0.5) for r in _half_extents(cloud.radius[pts], zp, cam, max_splat, reach))
    j0, j1 = _splat_spans(u, rho_u, W)
    i0, i1 = _splat_spans(v, rho_v, H)
    nj, ni = j1 - j0 + 1, i1 - i0 + 1
    live = (nj > 0) & (ni > 0)
    pts, u, v, zp, rho_u, rho_v = pts[live], u[live], v[live], zp[live], rho_u[live], rho_v[live]
    j0, i0, nj, ni = j0[live], i0[live], nj[live], ni[live]
    front = proj.depth.reshape(-1).astype(np.float64) * (1.0 + depth_tol)
    acc = np.zeros((4, H * W))
    for lo, hi in _chunks(nj * ni, FRAGMENT_CHUNK):
        pix, owner = _fragments(W, j0[lo:hi], i0[lo:hi], nj[lo:hi], ni[lo:hi])
        owner = owner + lo
        keep = zp[owner] <= front[pix]
        pix, owner = pix[keep], owner[keep]
        w = (np.clip(1.0 - np.abs(pix % W + 0.5 - u[owner]) / rho_u[owner], 0.0, None)
             * np.clip(1.0 - np.abs(pix // W + 0.5 - v[owner]) / rho_v[owner], 0.0, None))
        acc[3] += np.bincount(pix, w, H * W)
        rgb = cloud.rgb[pts[owner]]
        for c in range(3):
            acc[c] += np.bincount(pix, w * rgb[:, c], H * W)
    image = proj.image.reshape(-1, 3).copy()
    good = proj.mask.reshape(-1) & (acc[3] > 1e-6)
    image[good] = (acc[:3, good] / acc[3, good]).T
    return image.reshape(H, W, 3).astype(np.float32)


def footprint_pixels(cloud: PointCloud, cam: Camera, *, max_splat: float = 8.0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pixels each point's splat covers in cam, exactly as project() draws it, for the points
    whose whole splat lies inside the image and in front of the camera.

    → (pix [F] flat pixel index, owner [F] index of the point in cloud, whole [N] bool: which
    points those are). No z-buffer: a splat's pixels are listed whatever hides them.
    """
    H, W = cam.height, cam.width
    uv, z = world_to_pixels(cam, cloud.xyz)
    with np.errstate(invalid="ignore", divide="ignore"):
        front = np.isfinite(z) & (z > 0) & np.isfinite(uv).all(axis=1)
        zs = np.where(front, z, 1.0)
        rx, ry = _half_extents(cloud.radius, zs, cam, max_splat)
        u, v = np.where(front, uv[:, 0], -1e9), np.where(front, uv[:, 1], -1e9)
        j0, j1 = _splat_spans(u, rx, W, clip=False)
        i0, i1 = _splat_spans(v, ry, H, clip=False)
    whole = front & (j0 >= 0) & (j1 <= W - 1) & (i0 >= 0) & (i1 <= H - 1)
    pts = np.flatnonzero(whole)
    pix, owner = _fragments(W, j0[pts], i0[pts], j1[pts] - j0[pts] + 1, i1[pts] - i0[pts] + 1)
    return pix, pts[owner], whole


def merge(*clouds: PointCloud) -> PointCloud:
    """Concatenate clouds in order (also accepts one list of clouds). No clouds → an empty cloud."""
    if len(clouds) == 1 and isinstance(clouds[0], (list, tuple)):
        clouds = tuple(clouds[0])
    if not clouds:
        return PointCloud.empty()
    return PointCloud(np.concatenate([c.xyz for c in clouds]),
                      np.concatenate([c.rgb for c in clouds]),
                      np.concatenate([c.radius for c in clouds]))


def _group_cells(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group integer cells [N, 3] → (inverse [N]: group of each row, counts [M]), groups in
    lexicographic cell order. One int64 key per row when the extent allows, else rows."""
    lo = cell.min(axis=0)
    extent = (cell.max(axis=0) - lo + 1).astype(np.float64)
    if np.prod(extent) < 2.0 ** 62:
        c = cell - lo
        key = (c[:, 0] * int(extent[1]) + c[:, 1]) * int(extent[2]) + c[:, 2]
        _, inverse, n = np.unique(key, return_inverse=True, return_counts=True)
    else:
        _, inverse, n = np.unique(cell, axis=0, return_inverse=True, return_counts=True)
    return inverse.reshape(-1), n


def voxel_downsample(cloud: PointCloud, voxel: float) -> PointCloud:
    """One point per occupied voxel of edge `voxel` (a grid anchored at the world origin): the mean
    position and colour of the voxel's points and their largest radius. Voxels come out in
    lexicographic order of their integer (x, y, z) cell.
    """
    voxel = float(voxel)
    if not np.isfinite(voxel) or voxel <= 0:
        raise ValueError(f"voxel_downsample: voxel must be a finite size > 0, got {voxel}")
    if len(cloud) == 0:
        return PointCloud.empty()
    if not np.isfinite(cloud.xyz).all():
        raise ValueError("voxel_downsample: cloud has non-finite coordinates")
    cell = np.floor(cloud.xyz / voxel)
    if np.abs(cell).max() >= 2.0 ** 62:
        raise ValueError(f"voxel_downsample: voxel {voxel} is too small for coordinates up to "
                         f"{np.abs(cloud.xyz).max():g}")
    inverse, n = _group_cells(cell.astype(np.int64))
    m = len(n)
    xyz = np.stack([np.bincount(inverse, cloud.xyz[:, a], m) for a in range(3)], axis=1) / n[:, None]
    rgb = np.stack([np.bincount(inverse, cloud.rgb[:, a], m) for a in range(3)], axis=1) / n[:, None]
    radius = np.zeros(m, np.float32)
    np.maximum.at(radius, inverse, cloud.radius)
    return PointCloud(xyz, rgb, radius)


# ---------------------------------------------------------------------------------------------
# PLY I/O: the wire's point-cloud layout (wire.ply)

def read_ply(path) -> PointCloud:
    """Read a binary PLY point cloud (any element order, extra properties ignored; wire.ply).

    Needs vertex properties x, y, z; colours default to 0.5 grey and radius to 0 (a one-pixel
    splat). Raises ValueError naming what is unsupported.
    """
    cloud = read_point_ply(path)
    if cloud.radius is None:
        cloud.radius = np.zeros(len(cloud), np.float32)
    return cloud
