"""A pure-PyTorch reference rasterizer for 3D Gaussians, with gsplat's conventions.

Inputs follow ``gsplat.rasterization``: world-to-camera ``viewmats: [C, 4, 4]`` (OpenCV camera:
x right, y down, z forward), ``Ks: [C, 3, 3]`` in pixels, ``means: [N, 3]``, ``quats: [N, 4]``
(w, x, y, z; normalised here), ``scales: [N, 3]`` and ``opacities: [N]`` already activated,
``colors: [N, 3]`` or ``[C, N, 3]``. Pixel (row i, column j) has its centre at (j + ½, i + ½).

EWA splatting (Zwicker et al.; 3DGS eq. 5):

    Σ = R S Sᵀ Rᵀ,   μ' = W μ + t,   Σ' = J W Σ Wᵀ Jᵀ + ε I₂     (ε = eps2d = 0.3 px², a low-pass)
    J = [[fx/z, 0, −fx·x/z²], [0, fy/z, −fy·y/z²]]   (x, y clamped to 1.3× the field of view)

In the "antialiased" mode (gsplat's ``rasterize_mode="antialiased"``, Mip-Splatting's 2-D filter)
the opacity is compensated for the low-pass, o' = o · √(det Σ'_{ε=0} / det Σ').
Front-to-back compositing over the Gaussians sorted by depth (3DGS eq. 3), as gsplat's kernel:

    α_k = min(0.999, o'_k · exp(−½ dᵀ Σ'⁻¹ d)),  skipped when α_k < 1/255,
    C = Σ_k c_k α_k T_k,  T_k = Π_{j<k} (1 − α_j),  stopping before the Gaussian that takes T ≤ 1e-4.

Everything is autograd-differentiable (refinement backpropagates through it). The image is cut in
tiles; each tile composites only the Gaussians whose 1/255 contour reaches it, in batches of tiles
(and of Gaussians within a tile, carrying the transmittance) so memory stays bounded: 100k
Gaussians at 256² fit in a few hundred MB. The render is linear in the colours: ``composite_weights``
walks the same tiles once and returns it as a sparse matrix of weights T_k·α_k (pixel × Gaussian),
which is what the colour fit (gaussians.fit_colors) solves with.

With CUDA tensors and gsplat's CUDA extension available, ``rasterize`` hands over to
``gsplat.rasterization`` (same arguments); this module is then the oracle the tests check it with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0     # gsplat skips fainter contributions
ALPHA_MAX = 0.999           # gsplat caps every α
T_MIN = 1e-4                # gsplat stops a pixel before its transmittance drops to this
ELEMENT_BUDGET = 1 << 20    # pixel × Gaussian pairs per compositing batch: its float32 temporaries
                            # (4 MiB each) stay in cache; 1.5–4× faster on one CPU core than 1 << 22


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """quats: [..., 4] (w, x, y, z), any norm → rotation matrices [..., 3, 3]."""
    w, x, y, z = torch.unbind(F.normalize(quats, dim=-1), dim=-1)
    R = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                     2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                     2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], dim=-1)
    return R.reshape(quats.shape[:-1] + (3, 3))


def rotmat_to_quat(R: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] → unit quaternions [..., 4] (w, x, y, z) with w ≥ 0.

    Shepperd's method: each row uses the largest of 1 + tr, 1 + 2R₀₀ − tr, … for stability.
    """
    m = R.reshape(R.shape[:-2] + (9,))
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = torch.unbind(m, dim=-1)
    tr = r00 + r11 + r22
    cand = torch.stack([
        torch.stack([1 + tr, r21 - r12, r02 - r20, r10 - r01], -1),
        torch.stack([r21 - r12, 1 + r00 - r11 - r22, r01 + r10, r02 + r20], -1),
        torch.stack([r02 - r20, r01 + r10, 1 - r00 + r11 - r22, r12 + r21], -1),
        torch.stack([r10 - r01, r02 + r20, r12 + r21, 1 - r00 - r11 + r22], -1)], -2)  # [..., 4, 4]
    best = torch.stack([1 + tr, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22],
                       -1).argmax(-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def covariance(quats: Tensor, scales: Tensor) -> Tensor:
    """Σ = R S Sᵀ Rᵀ: quats [N, 4], scales [N, 3] → [N, 3, 3]."""
    M = quat_to_rotmat(quats) * scales[..., None, :]
    return M @ M.transpose(-1, -2)


@dataclass
class Projected:
    """Gaussians projected into C cameras (all [C, N, …]).

    means2d: [C, N, 2] pixels; conics: [C, N, 3] (a, b, c) of Σ'⁻¹ = [[a, b], [b, c]];
    opacities: [C, N] after the antialiasing compensation (if any); depths: [C, N] camera z;
    sort_depths: [C, N] z without the camera translation (same order, exact in float32 even when
    the camera is 10⁶ units away); radii: [C, N, 2] int, 3.33σ bounding half-sizes (0 = culled);
    extents: [C, N, 2] half-sizes of the α ≥ 1/255 ellipse (0 = culled).
    """

    means2d: Tensor
    conics: Tensor
    opacities: Tensor
    depths: Tensor
    sort_depths: Tensor
    radii: Tensor
    extents: Tensor


def project(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmats: Tensor,
            Ks: Tensor, width: int, height: int, *, eps2d: float = 0.3, near_plane: float = 0.01,
            far_plane: float = 1e10, antialiased: bool = True) -> Projected:
    """EWA projection of N Gaussians into C cameras (see the module docstring for the equations).

    means: [N, 3]; quats: [N, 4]; scales: [N, 3]; opacities: [N]; viewmats: [C, 4, 4];
    Ks: [C, 3, 3]. Gaussians outside (near_plane, far_plane) or whose 1/255 ellipse misses the
    image get radii = extents = 0.
    """
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]                        # [C, 3, 3], [C, 3]
    rotated = torch.einsum("cij,nj->cni", R, means)                          # [C, N, 3]
    mc = rotated + t[:, None, :]
    Sigma_c = torch.einsum("cij,njk,clk->cnil", R, covariance(quats, scales), R)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]                            # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    x, y, z = mc.unbind(-1)
    # Clamp the Jacobian's x/z, y/z to 1.3× the field of view (gsplat, 3DGS): a Gaussian far
    # outside the image should not get a huge, wrongly sheared footprint.
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * width / (2 * fx), cx / fx + 0.3 * width / (2 * fx)
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * height / (2 * fy), cy / fy + 0.3 * height / (2 * fy)
    zs = torch.where(z.abs() > 1e-12, z, torch.full_like(z, 1e-12))
    tx = zs * torch.clamp(x / zs, -lim_x_neg, lim_x_pos)
    ty = zs * torch.clamp(y / zs, -lim_y_neg, lim_y_pos)
    O = torch.zeros_like(zs)
    J = torch.stack([fx / zs, O, -fx * tx / zs ** 2, O, fy / zs, -fy * ty / zs ** 2], -1)
    J = J.reshape(mc.shape[:-1] + (2, 3))
    cov2d = J @ Sigma_c @ J.transpose(-1, -2)                                # [C, N, 2, 2]
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], -1)         # [C, N, 2]

    a, b, c = cov2d[..., 0, 0] + eps2d, 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1] + eps2d
    det_orig = cov2d[..., 0, 0] * cov2d[..., 1, 1] - b * b
    det = (a * c - b * b).clamp_min(1e-10)
    conics = torch.stack([c / det, -b / det, a / det], -1)
    opac = opacities[None, :].expand_as(det)
    if antialiased:
        opac = opac * torch.sqrt(torch.clamp(det_orig / det, min=0.0))

    with torch.no_grad():
        valid = (det > 1e-10) & (z > near_plane) & (z < far_plane)
        # α ≥ 1/255 ⇔ ½ dᵀΣ'⁻¹d ≤ ln(255·o'): that ellipse's half-sizes are √(2 ln(255 o') Σ'ᵢᵢ)
        level = torch.log(opac.detach().clamp_min(1e-30) / ALPHA_MIN)
        valid &= level > 0
        ext = torch.stack([torch.sqrt(2 * level.clamp_min(0) * a), torch.sqrt(2 * level.clamp_min(0) * c)], -1)
        radii = torch.ceil(3.33 * torch.stack([a.sqrt(), c.sqrt()], -1))
        m = means2d.detach()
        inside = ((m[..., 0] + ext[..., 0] > 0) & (m[..., 0] - ext[..., 0] < width)
                  & (m[..., 1] + ext[..., 1] > 0) & (m[..., 1] - ext[..., 1] < height))
        valid &= inside & torch.isfinite(m).all(-1)
        ext = torch.where(valid[..., None], ext, torch.zeros_like(ext))
        radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).int()
    return Projected(means2d, conics, opac, z, rotated[..., 2], radii, ext)


def _intersections(p: Projected, width: int, height: int, tile: int):
    """Tile × Gaussian pairs, sorted by (camera, tile, depth): (gaussian [M] index into the
    flattened [C·N], tile [M] global tile id c·Ty·Tx + ty·Tx + tx, n_tiles).

    One sort of the integer keys tile·C·N + depth rank (the rank from one stable sort of the
    C·N depths, so equal depths keep their input order).
    """
    C, N = p.depths.shape
    Tx, Ty = math.ceil(width / tile), math.ceil(height / tile)
    cam, g = torch.nonzero(p.extents[..., 0] > 0, as_tuple=True)
    m, e = p.means2d.detach()[cam, g], p.extents[cam, g]
    # pixel j is reached when |j + ½ − μ| ≤ extent
    j0 = torch.ceil(m[:, 0] - e[:, 0] - 0.5).clamp(0, width - 1).long() // tile
    j1 = torch.floor(m[:, 0] + e[:, 0] - 0.5).clamp(0, width - 1).long() // tile
    i0 = torch.ceil(m[:, 1] - e[:, 1] - 0.5).clamp(0, height - 1).long() // tile
    i1 = torch.floor(m[:, 1] + e[:, 1] - 0.5).clamp(0, height - 1).long() // tile
    nx, ny = (j1 - j0 + 1).clamp_min(0), (i1 - i0 + 1).clamp_min(0)
    count = nx * ny
    dev = count.device                  # every tensor made here lives where the Gaussians do (CUDA too)
    owner = torch.repeat_interleave(torch.arange(len(count), device=dev), count)
    k = torch.arange(len(owner), device=dev) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    nx_o = nx[owner]
    tiles = cam[owner] * (Tx * Ty) + (i0[owner] + k // nx_o) * Tx + (j0[owner] + k % nx_o)
    gauss = cam[owner] * N + g[owner]
    rank = torch.empty(C * N, dtype=torch.long, device=dev)
    rank[torch.argsort(p.sort_depths.detach().reshape(-1), stable=True)] = torch.arange(C * N, device=dev)
    order = torch.argsort(tiles * (C * N) + rank[gauss])
    return gauss[order], tiles[order], C * Tx * Ty


def _tile_batches(counts: Tensor, pixels: int, budget: int) -> list[Tensor]:
    """Group the non-empty tiles (counts: [T]) into batches of about `budget` pixel×Gaussian pairs,
    tiles of similar counts together (less padding). → list of tile-id tensors."""
    live = torch.nonzero(counts > 0).squeeze(1)
    live = live[torch.argsort(counts[live], descending=True)]
    batches, start = [], 0
    c = counts[live].tolist()
    while start < len(c):
        n = max(1, budget // max(1, c[start] * pixels))
        batches.append(live[start:start + n])
        start += n
    return batches


def _walk_tiles(p: Projected, width: int, height: int, tile_size: int, budget: int):
    """The front-to-back walk shared by ``composite`` and ``composite_weights``.

    Yields, per batch of B tiles: (tiles [B] global ids, chunks, T [B, P]) where chunks is a list
    of (ids [B, k] into the flattened [C·N + 1] Gaussians (C·N = the null Gaussian, α = 0),
    w [B, P, k] = α_k T_k, the compositing weight of Gaussian ids[:, k] at each of the tile's
    P = tile_size² pixels), and T the transmittance left after the tile's Gaussians.
    Differentiable in p's means2d, conics and opacities.
    """
    C, N = p.depths.shape
    P = tile_size * tile_size
    Tx = math.ceil(width / tile_size)
    Ty = math.ceil(height / tile_size)
    with torch.no_grad():
        gauss, tiles, n_tiles = _intersections(p, width, height, tile_size)
        counts = torch.bincount(tiles, minlength=n_tiles)
        starts = torch.cumsum(counts, 0) - counts
    # flattened per-(camera, Gaussian) attributes + one null Gaussian (α = 0) for the padding
    mu = torch.cat([p.means2d.reshape(-1, 2), p.means2d.new_zeros(1, 2)])
    con = torch.cat([p.conics.reshape(-1, 3), p.conics.new_zeros(1, 3)])
    op = torch.cat([p.opacities.reshape(-1), p.opacities.new_zeros(1)])
    null = C * N

    dev = mu.device
    ty, tx = torch.meshgrid(torch.arange(tile_size, device=dev), torch.arange(tile_size, device=dev),
                            indexing="ij")
    local = torch.stack([tx.reshape(-1), ty.reshape(-1)], -1).to(mu.dtype) + 0.5      # [P, 2]
    for batch in _tile_batches(counts, P, budget):
        n_b, K = len(batch), int(counts[batch].max())
        cam_tile = batch % (Tx * Ty)
        origin = torch.stack([(cam_tile % Tx) * tile_size, (cam_tile // Tx) * tile_size], -1)
        pix = origin[:, None, :].to(mu.dtype) + local[None]                          # [B, P, 2]
        slot = torch.arange(K, device=dev)
        with torch.no_grad():
            pos = starts[batch, None] + slot[None, :]
            ids = torch.where(slot[None, :] < counts[batch, None],
                              gauss[pos.clamp_max(len(gauss) - 1)], torch.full_like(pos, null))
        T = mu.new_ones(n_b, P)
        stopped = torch.zeros(n_b, P, dtype=torch.bool, device=dev)
        chunks = []
        k_chunk = max(1, budget // (n_b * P))
        for k0 in range(0, K, k_chunk):                 # Gaussians of the tiles, front to back
            if bool(stopped.all()):
                break                                   # every pixel has reached T_MIN
            idk = ids[:, k0:k0 + k_chunk]                                          # [B, k]
            m = mu[idk]                                                            # [B, k, 2]
            dx = pix[:, :, None, 0] - m[:, None, :, 0]                             # [B, P, k]
            dy = pix[:, :, None, 1] - m[:, None, :, 1]
            cn = con[idk]                                                          # [B, k, 3]
            sigma = (0.5 * (cn[:, None, :, 0] * dx * dx + cn[:, None, :, 2] * dy * dy)
                     + cn[:, None, :, 1] * dx * dy)                                # [B, P, k]
            alpha = torch.clamp_max(op[idk][:, None] * torch.exp(-sigma), ALPHA_MAX)
            alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
            T_incl = T[..., None] * torch.cumprod(1 - alpha, -1)                   # [B, P, k]
            T_excl = torch.cat([T[..., None], T_incl[..., :-1]], -1)
            # stop before the Gaussian that takes T to ≤ T_MIN: keep is a prefix, and the kept
            # T_excl depend on kept α only, so masking the weights is exact (values and gradients)
            keep = (T_incl.detach() > T_MIN) & ~stopped[..., None]
            stopped = stopped | ~keep[..., -1]
            chunks.append((idk, torch.where(keep, alpha * T_excl, torch.zeros_like(alpha))))
            # T after the last kept Gaussian = the smallest kept T_incl (T_incl never increases)
            T = torch.minimum(T, torch.where(keep, T_incl, torch.full_like(T_incl, 2.0)).amin(-1))
        yield batch, chunks, T


def _untile(x: Tensor, C: int, width: int, height: int, tile_size: int) -> Tensor:
    """[C·Ty·Tx, P, D] per-tile values → [C, H, W, D]."""
    Tx, Ty = math.ceil(width / tile_size), math.ceil(height / tile_size)
    x = x.reshape(C, Ty, Tx, tile_size, tile_size, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(C, Ty * tile_size, Tx * tile_size, -1)[:, :height, :width]


def composite(p: Projected, colors: Tensor, width: int, height: int, *, tile_size: int = 4,
              budget: int = ELEMENT_BUDGET) -> tuple[Tensor, Tensor]:
    """Front-to-back α compositing (3DGS eq. 3) of projected Gaussians, tile by tile.

    colors: [C, N, D]. Returns (colour [C, H, W, D], alpha [C, H, W, 1]) over a zero background.
    """
    C, N = p.depths.shape
    D = colors.shape[-1]
    P = tile_size * tile_size
    n_tiles = C * math.ceil(width / tile_size) * math.ceil(height / tile_size)
    col = torch.cat([colors.reshape(-1, D), colors.new_zeros(1, D)])
    out_rgb = p.means2d.new_zeros(n_tiles, P, D)
    out_T = p.means2d.new_ones(n_tiles, P)
    for batch, chunks, T in _walk_tiles(p, width, height, tile_size, budget):
        rgb = sum(torch.einsum("bpk,bkd->bpd", w, col[idk]) for idk, w in chunks)
        out_rgb = out_rgb.index_copy(0, batch, rgb)
        out_T = out_T.index_copy(0, batch, T)
    return (_untile(out_rgb, C, width, height, tile_size),
            1 - _untile(out_T[..., None], C, width, height, tile_size))


def composite_weights(p: Projected, width: int, height: int, *, tile_size: int = 4,
                      budget: int = ELEMENT_BUDGET) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The render as a sparse linear map of the colours: rgb = A c, A[u, k] = T_k(u)·α_k(u).

    The same walk as ``composite`` (so exactly its image), keeping every non-zero weight instead
    of summing. No autograd. → (pixels [M] flat ids c·H·W + y·W + x, gaussians [M] flat ids
    c·N + n, weights [M], T [C, H, W] the transmittance left behind the Gaussians, = 1 − alpha).
    """
    C, N = p.depths.shape
    Tx, Ty = math.ceil(width / tile_size), math.ceil(height / tile_size)
    dev = p.means2d.device
    ly, lx = torch.meshgrid(torch.arange(tile_size, device=dev), torch.arange(tile_size, device=dev),
                            indexing="ij")
    ly, lx = ly.reshape(-1), lx.reshape(-1)                                                # [P]
    rows, cols, vals = [], [], []
    out_T = torch.ones(C * Ty * Tx, tile_size * tile_size, dtype=p.means2d.dtype, device=dev)
    with torch.no_grad():
        for batch, chunks, T in _walk_tiles(p, width, height, tile_size, budget):
            cam, t = batch // (Tx * Ty), batch % (Tx * Ty)
            x = (t % Tx)[:, None] * tile_size + lx[None]                                  # [B, P]
            y = (t // Tx)[:, None] * tile_size + ly[None]
            pix = torch.where((x < width) & (y < height), cam[:, None] * (height * width) + y * width + x,
                              torch.full_like(x, -1))
            for idk, w in chunks:
                nz = (w > 0) & (pix[:, :, None] >= 0)
                b, u, k = torch.nonzero(nz, as_tuple=True)
                rows.append(pix[b, u])
                cols.append(idk[b, k])
                vals.append(w[b, u, k])
            out_T[batch] = T
    cat = lambda xs, dt: torch.cat(xs) if xs else torch.zeros(0, dtype=dt, device=dev)  # noqa: E731
    T_img = _untile(out_T.detach()[..., None], C, width, height, tile_size)[..., 0]
    return cat(rows, torch.long), cat(cols, torch.long), cat(vals, p.means2d.dtype), T_img


def _check(name: str, x: Tensor, shape: tuple) -> None:
    if x.dim() != len(shape) or any(s is not None and x.shape[i] != s for i, s in enumerate(shape)):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name}: shape {tuple(x.shape)} does not match {want}")


def _gsplat_cuda_ready() -> bool:
    try:
        import gsplat  # noqa: F401
        from gsplat.cuda._backend import _C
        return _C is not None
    except Exception:
        return False


def choose_backend(device: torch.device, backend: str = "auto") -> str:
    """The rasterizer that renders tensors on device: "gsplat" or "reference".

    "auto" takes gsplat for CUDA devices when its CUDA extension loads, the reference rasterizer
    otherwise; "reference" and "gsplat" are taken as asked. ValueError for anything else.
    """
    if backend not in ("auto", "reference", "gsplat"):
        raise ValueError(f"backend: must be 'auto', 'reference' or 'gsplat', got {backend!r}")
    if backend != "auto":
        return backend
    return "gsplat" if torch.device(device).type == "cuda" and _gsplat_cuda_ready() else "reference"


def gsplat_rasterization():
    """gsplat.rasterization (imported on first use; gsplat is an optional dependency)."""
    from gsplat import rasterization
    return rasterization


def rasterize(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
              viewmats: Tensor, Ks: Tensor, width: int, height: int, *,
              near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = 0.3,
              antialiased: bool = True, backgrounds: Optional[Tensor] = None,
              tile_size: int = 4, info: Optional[dict] = None, backend: str = "auto",
              budget: int = ELEMENT_BUDGET) -> tuple[Tensor, Tensor]:
    """Render N Gaussians into C cameras → (rgb [C, H, W, D], alpha [C, H, W, 1]).

    means: [N, 3]; quats: [N, 4] wxyz; scales: [N, 3] and opacities: [N] activated; colors:
    [N, D] or [C, N, D]; viewmats: [C, 4, 4] world-to-camera; Ks: [C, 3, 3]; backgrounds: [C, D]
    or None (black). antialiased=True is gsplat's rasterize_mode="antialiased".
    backend: "auto" (gsplat on CUDA tensors when its extension loads, else the reference),
    "reference" or "gsplat". info: a dict to receive what gsplat's DefaultStrategy reads
    (means2d [C, N, 2], radii [C, N, 2], width, height, n_cameras, gaussian_ids).
    """
    N = means.shape[0] if means.dim() == 2 else -1
    _check("means", means, (None, 3))
    _check("quats", quats, (N, 4))
    _check("scales", scales, (N, 3))
    _check("opacities", opacities, (N,))
    if colors.dim() == 2:
        _check("colors", colors, (N, None))
    _check("viewmats", viewmats, (None, 4, 4))
    C = viewmats.shape[0]
    _check("Ks", Ks, (C, 3, 3))
    if colors.dim() == 3:
        _check("colors", colors, (C, N, None))
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ValueError(f"width, height: must be positive ints, got {width!r}, {height!r}")
    if choose_backend(means.device, backend) == "gsplat":
        rgb, alpha, meta = gsplat_rasterization()(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, packed=False,
            rasterize_mode="antialiased" if antialiased else "classic", backgrounds=backgrounds)
        if info is not None:
            info.update(meta)
        return rgb, alpha

    p = project(means, quats, scales, opacities, viewmats, Ks, width, height, eps2d=eps2d,
                near_plane=near_plane, far_plane=far_plane, antialiased=antialiased)
    cols = colors if colors.dim() == 3 else colors[None].expand(C, -1, -1)
    rgb, alpha = composite(p, cols, width, height, tile_size=tile_size, budget=budget)
    if backgrounds is not None:
        rgb = rgb + backgrounds[:, None, None, :] * (1 - alpha)
    if info is not None:
        info.update({"means2d": p.means2d, "radii": p.radii, "depths": p.depths,
                     "conics": p.conics, "opacities": p.opacities, "width": width,
                     "height": height, "n_cameras": C, "gaussian_ids": None})
    return rgb, alpha


def rasterize_naive(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,
                    colors: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int,
                    **kw) -> tuple[Tensor, Tensor]:
    """The same image evaluating every Gaussian at every pixel (one tile, no culling beyond the
    frustum): the benchmark's baseline and a cross-check of the tiling."""
    return rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                     backend="reference", tile_size=max(width, height), **kw)
