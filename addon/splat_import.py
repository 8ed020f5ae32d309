"""3D Gaussians (activated wire.splats.Gaussians) → a Blender point object that renders with F12 in
Cycles and EEVEE.

Layout (close to the 3DGS convention, so moving to native Gaussian splats on PointCloud objects is
a small change): a mesh of N loose vertices (``position`` = the means) with point attributes

    color     FLOAT_COLOR  scene-linear RGB of the colours (rgb = 0.5 + C0·f_dc in the file),
                           clipped to [0, 1], alpha 1
    opacity   FLOAT        the opacities α (sigmoid of the file's logit)
    scale     FLOAT_VECTOR the scales s (exp of the file's log scales), per-axis standard deviations
    rotation  QUATERNION   the unit wxyz quaternions

and, for instancing, ``zs_disc_rotation`` / ``zs_disc_scale``: the same Gaussian with its axes
cyclically relabelled so that local z is its thinnest axis (same covariance R·diag(s²)·Rᵀ).
A geometry nodes modifier instances one quad per Gaussian in its local xy plane, rotated by
zs_disc_rotation and scaled by K·zs_disc_scale (the quad spans ±K σ). The material reads the
instance's colour and opacity (Attribute node, Instancer) and the position on the quad in
instance space p (Texture Coordinate ▸ Object, |p| = 1 at K σ), and mixes Emission over
Transparent with

    a = fade · (1 − cover · fade_next) · α · exp(−½ K² |p|²)

(``fade`` and ``fade_next`` are Value nodes the level rig keys for cross-fades; ``cover`` is an
optional point attribute, 0 when absent). In renders (not the viewport) the node group drops a
Gaussian once the next level hides it, cover · fade_next ≥ 1 − COVER_EPS, with fade_next recomputed
from the scene time (the modifier inputs "Cover start" and "Cover frames", which the level rig sets
to the frames of the next level's linear fade-in): a ray then no longer crosses the fully
transparent quads of a covered level. From the frame "Hidden from" on, renders drop every point
(a level whose visible rest has left the screen for good). Everything moves in bulk with
``foreach_set``; every Gaussian is kept (no subsampling). Thin Gaussians (3DGS fits to surfaces,
the lifted zoom levels are flat) render exactly; the thin axis of a thick one is ignored.

Native splats (Blender 5.3 and later, ``native_splats()``: the one version check). A PointCloud of
type GAUSSIAN_SPLAT renders each point as a 3D Gaussian in Cycles, EEVEE and Workbench. It holds
the attributes Blender's own PLY importer writes (source/blender/io/ply/importer/ply_import_gsplat.cc)

    position       FLOAT_VECTOR the means
    radiance:base  FLOAT4       (f_dc_0, f_dc_1, f_dc_2, α): the file's SH0 coefficients, unchanged
                                (rgb = 0.5 + C0·f_dc), and the activated opacity
    scale          FLOAT_VECTOR the activated scales s
    rotation       QUATERNION   the unit wxyz quaternions

plus the optional ``zs_cover``. Blender treats the SH colour as display sRGB (measured on 5.3: rgb (0.2, 0.5, 0.8)
renders as (0.196, 0.498, 0.800) through the Standard view transform, in Cycles and EEVEE), which
is what the files hold, so radiance:base keeps the file's f_dc and the object has no material:
Blender's own splat shading reproduces the colours. The modifier (native_node_group) writes the
same opacity law into the splat's own α,

    radiance:base.w = α · clamp(fade · (1 − cover · fade_next), 0, 1)

(Blender's splat then adds its Gaussian falloff exp(…)) from its inputs "Fade" and "Fade next",
which the level rig keys as it keys the quads' material, and then applies the quad path's
render-time cull (Cover start, Cover frames, Hidden from); Delete Geometry keeps the splat type.
A faded splat must be faded in its α, not by a transparent material: Cycles skips splats of α 0,
while a material-transparent splat still takes its place on the ray (a covered level over the
next darkened a test frame from 0.49 to 0.29). Cycles samples native splats stochastically where
it composites the quads exactly: at the demo's 4 samples the levels render at 0.15–0.44× the
quads' time but 3.7–5.0 dB further from the level images; at 64 samples 0.4 dB. The import
therefore raises the scene's samples and switches the denoiser on (native_render.py: 40 samples +
the denoiser are within 0.17–0.32 dB of the quads, scripts/bench_splats_native). A transparent
surface within a native splat's reach changes how Cycles renders that splat, so the point cloud
that fades out over level 0 is lifted past it (importers.py, "Lift").
"""
from __future__ import annotations

import numpy as np

import bpy

from .importers import (JOB_KEY, current_group, ensure_collection, named_attribute,  # noqa: F401
                        prepare_render_settings, set_modifier_input, srgb_to_linear)
from .wire.splats import Gaussians, rgb_to_sh0

COLOR_ATTR, OPACITY_ATTR, SCALE_ATTR, ROTATION_ATTR = "color", "opacity", "scale", "rotation"
DISC_ROT_ATTR, DISC_SCALE_ATTR = "zs_disc_rotation", "zs_disc_scale"
K_SIGMA = 3.0  # the instanced quad spans ±K standard deviations
DEPTH_JITTER = 1e-3  # quads are lifted by up to this fraction of their half-size along the normal
GROUP_NAME = "Zoomscape Splats"
FADE_NODE, FADE_NEXT_NODE = "fade", "fade_next"
COVER_ATTR = "zs_cover"  # optional: how much the next finer level covers this Gaussian, 0..1
KIND = "splats"
COVER_START, COVER_FRAMES = "Cover start", "Cover frames"  # node group inputs: next level's fade-in
HIDDEN_FROM = "Hidden from"  # node group input: renders drop the whole object from this frame on
NEVER = 1.0e9  # Cover start of a splat object that no finer level covers
COVER_EPS = 1e-3  # a Gaussian keeping less than this fraction of its opacity is dropped in renders
NATIVE_SINCE = (5, 3, 0)  # the first Blender whose PointCloud renders 3D Gaussians (GAUSSIAN_SPLAT)
BASE_ATTR = "radiance:base"  # native splats: (f_dc_0..2, α), Blender's importer's layout
NATIVE_GROUP_NAME = "Zoomscape Native Splats"
FADE_INPUT, FADE_NEXT_INPUT = "Fade", "Fade next"  # native: the modifier inputs the level rig keys

# q ⊗ CYCLE[a] turns axis a into the local z axis (x→y→z→x is +120° about (1, 1, 1)).
CYCLE = {0: np.array([0.5, 0.5, 0.5, 0.5], np.float32), 1: np.array([0.5, -0.5, -0.5, -0.5], np.float32)}
CYCLE_AXES = {0: [1, 2, 0], 1: [2, 0, 1]}


def quat_mul_const(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Hamilton product q ⊗ c for q: [N, 4] wxyz and one c: [4] → [N, 4]."""
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    cw, cx, cy, cz = (float(v) for v in c)
    return np.stack([w * cw - x * cx - y * cy - z * cz,
                     w * cx + x * cw + y * cz - z * cy,
                     w * cy - x * cz + y * cw + z * cx,
                     w * cz + x * cy - y * cx + z * cw], axis=1).astype(np.float32)


def disc_frames(scales: np.ndarray, quats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel each Gaussian's axes cyclically so its smallest scale is local z.

    scales: [N, 3] activated; quats: [N, 4] wxyz normalised → (quats' [N, 4], scales' [N, 3]) with
    R(q')·diag(s')²·R(q')ᵀ = R(q)·diag(s)²·R(q)ᵀ and s'_z = min(s).
    """
    q_out, s_out = quats.copy(), scales.copy()
    thin = np.argmin(scales, axis=1)
    for axis in (0, 1):
        sel = np.flatnonzero(thin == axis)
        if len(sel):
            q_out[sel] = quat_mul_const(quats[sel], CYCLE[axis])
            s_out[sel] = scales[sel][:, CYCLE_AXES[axis]]
    return q_out, s_out


def splat_mesh(name: str, gaussians: Gaussians, extra: dict | None = None) -> "bpy.types.Mesh":
    """A mesh of len(gaussians) loose vertices carrying the attributes of the module docstring, plus
    extra FLOAT point attributes {name: [N]}."""
    n = len(gaussians)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(n)
    scales = np.asarray(gaussians.scales, dtype=np.float32)
    quats = np.asarray(gaussians.quats, dtype=np.float32)
    disc_q, disc_s = disc_frames(scales, quats)
    rgba = np.ones((n, 4), dtype=np.float32)
    rgba[:, :3] = srgb_to_linear(gaussians.colors)
    values = {"position": ("vector", gaussians.means),
              COLOR_ATTR: ("color", rgba),
              OPACITY_ATTR: ("value", gaussians.opacities),
              SCALE_ATTR: ("vector", scales),
              ROTATION_ATTR: ("value", quats),
              DISC_ROT_ATTR: ("value", disc_q),
              DISC_SCALE_ATTR: ("vector", disc_s)}
    values.update({k: ("value", v) for k, v in (extra or {}).items()})
    types = {k: "FLOAT" for k in (extra or {})}
    types.update({COLOR_ATTR: "FLOAT_COLOR", OPACITY_ATTR: "FLOAT", SCALE_ATTR: "FLOAT_VECTOR",
             ROTATION_ATTR: "QUATERNION", DISC_ROT_ATTR: "QUATERNION", DISC_SCALE_ATTR: "FLOAT_VECTOR"})
    # Create every attribute first, then fill each looked up by name: a Python reference to one
    # attribute does not survive attributes.new() (the attribute array may be reallocated).
    for attr, data_type in types.items():
        mesh.attributes.new(attr, data_type, "POINT")
    for attr, (prop, arr) in values.items():
        mesh.attributes[attr].data.foreach_set(prop, np.ascontiguousarray(arr, dtype=np.float32).ravel())
    mesh.update()
    return mesh


def native_splats() -> bool:
    """Does this Blender render Gaussian splats natively (PointCloud type GAUSSIAN_SPLAT)? The one
    version check between the two paths: 5.3 and later native, 4.2 to 5.2 instanced quads."""
    return tuple(bpy.app.version) >= NATIVE_SINCE


def splat_path_label() -> str:
    """How this Blender renders splats, for the panel: "native (Blender 5.3)" or "instanced quads"."""
    major, minor = bpy.app.version[:2]
    return f"native (Blender {major}.{minor})" if native_splats() else "instanced quads"


def checked_gaussians(g: Gaussians) -> dict:
    """g's fields as float32 arrays {means [N, 3], quats [N, 4], scales [N, 3], opacities [N],
    colors [N, 3]}; ValueError naming the field for a wrong shape or non-finite values."""
    n = int(np.shape(g.means)[0]) if np.ndim(g.means) == 2 else -1
    out = {}
    for field, width in (("means", 3), ("quats", 4), ("scales", 3), ("opacities", 0), ("colors", 3)):
        a = np.asarray(getattr(g, field), dtype=np.float32)
        want = (n, width) if width else (n,)
        if n < 0 or a.shape != want:
            raise ValueError(f"gaussians.{field}: shape {a.shape}, expected {want}")
        if not np.isfinite(a).all():
            raise ValueError(f"gaussians.{field}: has non-finite values")
        out[field] = a
    return out


def splat_pointcloud(name: str, gaussians: Gaussians, extra: dict | None = None) -> "bpy.types.PointCloud":
    """A GAUSSIAN_SPLAT point cloud of len(gaussians) points with Blender's native splat attributes
    (position, radiance:base, scale, rotation: the module docstring) and extra FLOAT point
    attributes {name: [N]}; every array moves with one foreach_set (Blender 5.3+)."""
    g = checked_gaussians(gaussians)
    n = len(g["means"])
    for k, v in (extra or {}).items():
        if np.shape(v) != (n,):
            raise ValueError(f"extra['{k}']: shape {np.shape(v)}, expected ({n},)")
    pc = bpy.data.pointclouds.new(name)
    pc.resize(n)
    pc.type = "GAUSSIAN_SPLAT"
    base = np.empty((n, 4), dtype=np.float32)
    base[:, :3] = rgb_to_sh0(g["colors"])  # the file's f_dc: Blender decodes it as display sRGB
    base[:, 3] = g["opacities"]
    quats = g["quats"] / np.linalg.norm(g["quats"], axis=1, keepdims=True).clip(1e-30)
    values = {"position": ("vector", g["means"]), BASE_ATTR: ("vector", base),
              SCALE_ATTR: ("vector", g["scales"]), ROTATION_ATTR: ("value", quats)}
    values.update({k: ("value", v) for k, v in (extra or {}).items()})
    types = {BASE_ATTR: "FLOAT4", SCALE_ATTR: "FLOAT_VECTOR", ROTATION_ATTR: "QUATERNION"}
    types.update({k: "FLOAT" for k in (extra or {})})
    # Create every attribute first, then fill each looked up by name (as splat_mesh).
    for attr, data_type in types.items():
        if attr not in pc.attributes:
            pc.attributes.new(attr, data_type, "POINT")
    for attr, (prop, arr) in values.items():
        pc.attributes[attr].data.foreach_set(prop, np.ascontiguousarray(arr, dtype=np.float32).ravel())
    pc.update_tag()
    return pc


def splat_count(obj) -> int:
    """How many Gaussians a splat object holds (a mesh's vertices or a point cloud's points)."""
    return len(obj.data.attributes["position"].data)


def opacities(data) -> np.ndarray:
    """The opacities α of a splat mesh or point cloud: [N] float64 (OPACITY_ATTR on the quad path,
    the w of BASE_ATTR on the native one)."""
    n = len(data.attributes["position"].data)
    if OPACITY_ATTR in data.attributes and data.attributes[OPACITY_ATTR].data_type == "FLOAT":
        out = np.empty(n, dtype=np.float32)
        data.attributes[OPACITY_ATTR].data.foreach_get("value", out)
        return out.astype(np.float64)
    out = np.empty(4 * n, dtype=np.float32)
    data.attributes[BASE_ATTR].data.foreach_get("vector", out)
    return out.reshape(n, 4)[:, 3].astype(np.float64)


def pixel_sigmas(obj, frame, matrix_world, f_px: float) -> np.ndarray:
    """The largest standard deviation of each Gaussian of splat object obj (held in its level's
    frame: origin, rotation, unit) in pixels of the camera at matrix_world (focal length f_px)
    → [N] float64 (0 for Gaussians behind that camera)."""
    n = splat_count(obj)
    means, scales = np.empty(3 * n, np.float32), np.empty(3 * n, np.float32)
    obj.data.attributes["position"].data.foreach_get("vector", means)
    obj.data.attributes[SCALE_ATTR].data.foreach_get("vector", scales)
    unit = float(frame.unit)
    world = np.asarray(frame.origin, np.float64) + unit * means.reshape(n, 3).astype(np.float64) @ np.asarray(
        frame.rotation, np.float64).T
    M = np.asarray(matrix_world, dtype=np.float64).reshape(4, 4)
    z = -((world - M[:3, 3]) @ M[:3, :3])[:, 2]
    sigma = unit * scales.reshape(n, 3).max(axis=1).astype(np.float64)
    return np.where(z > 0, sigma * float(f_px) / np.maximum(z, 1e-30), 0.0)


def enabled(sockets, name: str):
    """The first enabled socket called name (4.2 keeps one hidden socket per data type)."""
    return next(s for s in sockets if s.name == name and s.enabled)


def render_cull(group, gin, geometry) -> "bpy.types.Node":
    """Add to group the render-time cull of the module docstring → its Delete Geometry node (input:
    the socket geometry). In renders (not the viewport) it drops the points with
    COVER_ATTR · clamp((frame − Cover start) / Cover frames, 0, 1) ≥ 1 − COVER_EPS, and every point
    from the frame Hidden from on; gin is the group's input node (with those three inputs)."""
    nodes, links = group.nodes, group.links
    # cull: fade_next = clamp((frame − start) / frames); drop cover · fade_next ≥ 1 − ε in renders
    time = nodes.new("GeometryNodeInputSceneTime")
    since = nodes.new("ShaderNodeMath")
    since.operation = "SUBTRACT"
    fade_next = nodes.new("ShaderNodeMath")
    fade_next.operation, fade_next.use_clamp = "DIVIDE", True
    cover = named_attribute(nodes, COVER_ATTR, "FLOAT")
    hidden = nodes.new("ShaderNodeMath")
    hidden.operation = "MULTIPLY"
    gone = nodes.new("ShaderNodeMath")
    gone.operation = "GREATER_THAN"
    gone.inputs[1].default_value = 1.0 - COVER_EPS
    late = nodes.new("FunctionNodeCompare")  # frame ≥ Hidden from: nothing of it shows any more
    late.data_type, late.operation = "FLOAT", "GREATER_EQUAL"
    either = nodes.new("FunctionNodeBooleanMath")
    either.operation = "OR"
    viewport = nodes.new("GeometryNodeIsViewport")
    render_only = nodes.new("FunctionNodeBooleanMath")
    render_only.operation = "NIMPLY"  # gone and not viewport
    cull = nodes.new("GeometryNodeDeleteGeometry")
    cull.domain = "POINT"
    links.new(time.outputs["Frame"], since.inputs[0])
    links.new(gin.outputs[COVER_START], since.inputs[1])
    links.new(since.outputs[0], fade_next.inputs[0])
    links.new(gin.outputs[COVER_FRAMES], fade_next.inputs[1])
    links.new(enabled(cover.outputs, "Attribute"), hidden.inputs[0])
    links.new(fade_next.outputs[0], hidden.inputs[1])
    links.new(hidden.outputs[0], gone.inputs[0])
    links.new(time.outputs["Frame"], enabled(late.inputs, "A"))
    links.new(gin.outputs[HIDDEN_FROM], enabled(late.inputs, "B"))
    links.new(gone.outputs[0], either.inputs[0])
    links.new(late.outputs[0], either.inputs[1])
    links.new(either.outputs[0], render_only.inputs[0])
    links.new(viewport.outputs[0], render_only.inputs[1])
    links.new(geometry, cull.inputs["Geometry"])
    links.new(render_only.outputs[0], cull.inputs["Selection"])
    for node, (x, y) in ((time, (-1500, -500)), (since, (-1300, -500)), (fade_next, (-1100, -500)),
                         (cover, (-1300, -700)), (hidden, (-900, -550)), (gone, (-700, -550)),
                         (viewport, (-700, -750)), (render_only, (-500, -600)), (cull, (-300, -100)),
                         (late, (-900, -850)), (either, (-700, -650))):
        node.location = (x, y)
    return cull


def cull_inputs(group) -> None:
    """The render-time cull's inputs Cover start, Cover frames and Hidden from on group."""
    for name, default in ((COVER_START, NEVER), (COVER_FRAMES, 1.0), (HIDDEN_FROM, NEVER)):
        sock = group.interface.new_socket(name=name, in_out="INPUT", socket_type="NodeSocketFloat")
        sock.default_value = default


def splat_node_group() -> "bpy.types.GeometryNodeTree":
    """Geometry nodes: a ±1 quad (Set Material ← the Material input) instanced on every point,
    rotated by DISC_ROT_ATTR and scaled by K_SIGMA·DISC_SCALE_ATTR, then lifted by a random
    ±DEPTH_JITTER (in its own half-size) along its normal. In renders, points with
    COVER_ATTR · clamp((frame − Cover start) / Cover frames, 0, 1) ≥ 1 − COVER_EPS are deleted
    first, and every point from the frame Hidden from on. Shared by all splat objects."""
    group = current_group(GROUP_NAME, ("Material", COVER_START, COVER_FRAMES, HIDDEN_FROM))
    if group is not None:
        return group
    group = bpy.data.node_groups.new(GROUP_NAME, "GeometryNodeTree")
    group.interface.new_socket(name="Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    group.interface.new_socket(name="Material", in_out="INPUT", socket_type="NodeSocketMaterial")
    cull_inputs(group)
    group.interface.new_socket(name="Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    gin, gout = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    # the depth jitter below is random per Gaussian; key it by the index before the cull (the
    # ``id`` attribute) so the Gaussians that remain keep their depth order when others are dropped
    index = nodes.new("GeometryNodeInputIndex")
    keep_id = nodes.new("GeometryNodeStoreNamedAttribute")
    keep_id.data_type, keep_id.domain = "INT", "POINT"
    keep_id.inputs["Name"].default_value = "id"
    gid = nodes.new("GeometryNodeInputID")
    links.new(gin.outputs["Geometry"], keep_id.inputs["Geometry"])
    links.new(index.outputs[0], enabled(keep_id.inputs, "Value"))
    cull = render_cull(group, gin, keep_id.outputs["Geometry"])
    quad = nodes.new("GeometryNodeMeshGrid")
    quad.inputs["Size X"].default_value = quad.inputs["Size Y"].default_value = 2.0
    quad.inputs["Vertices X"].default_value = quad.inputs["Vertices Y"].default_value = 2
    set_mat = nodes.new("GeometryNodeSetMaterial")
    rot = named_attribute(nodes, DISC_ROT_ATTR, "QUATERNION")
    scale = named_attribute(nodes, DISC_SCALE_ATTR, "FLOAT_VECTOR")
    # The quad is flat, so its instance z scale is free: set it to the larger in-plane scale, and
    # lift each quad by a tiny random fraction of it along its normal. Exactly coplanar splats
    # (a flat surface, or one level over the next) then never share a depth, which Cycles needs:
    # a ray continuing through a transparent hit skips surfaces at the same distance.
    sep = nodes.new("ShaderNodeSeparateXYZ")
    widest = nodes.new("ShaderNodeMath")
    widest.operation = "MAXIMUM"
    comb = nodes.new("ShaderNodeCombineXYZ")
    k = nodes.new("ShaderNodeVectorMath")
    k.operation = "SCALE"
    k.inputs["Scale"].default_value = K_SIGMA
    inst = nodes.new("GeometryNodeInstanceOnPoints")
    rand = nodes.new("FunctionNodeRandomValue")
    rand.data_type = "FLOAT"
    enabled(rand.inputs, "Min").default_value = -DEPTH_JITTER
    enabled(rand.inputs, "Max").default_value = DEPTH_JITTER
    lift = nodes.new("ShaderNodeCombineXYZ")
    move = nodes.new("GeometryNodeTranslateInstances")
    move.inputs["Local Space"].default_value = True
    links.new(quad.outputs["Mesh"], set_mat.inputs["Geometry"])
    links.new(gin.outputs["Material"], set_mat.inputs["Material"])
    links.new(cull.outputs["Geometry"], inst.inputs["Points"])
    links.new(set_mat.outputs["Geometry"], inst.inputs["Instance"])
    links.new(rot.outputs["Attribute"], inst.inputs["Rotation"])
    links.new(scale.outputs["Attribute"], sep.inputs[0])
    links.new(sep.outputs["X"], widest.inputs[0])
    links.new(sep.outputs["Y"], widest.inputs[1])
    links.new(sep.outputs["X"], comb.inputs["X"])
    links.new(sep.outputs["Y"], comb.inputs["Y"])
    links.new(widest.outputs[0], comb.inputs["Z"])
    links.new(comb.outputs[0], k.inputs[0])
    links.new(k.outputs["Vector"], inst.inputs["Scale"])
    links.new(gid.outputs[0], rand.inputs["ID"])
    links.new(enabled(rand.outputs, "Value"), lift.inputs["Z"])
    links.new(inst.outputs["Instances"], move.inputs["Instances"])
    links.new(lift.outputs[0], move.inputs["Translation"])
    links.new(move.outputs["Instances"], gout.inputs[0])
    for node, (x, y) in ((gin, (-900, 0)), (quad, (-700, -250)), (set_mat, (-500, -250)),
                         (rot, (-700, 200)), (scale, (-1100, 450)), (sep, (-900, 450)),
                         (widest, (-700, 500)), (comb, (-500, 450)), (k, (-300, 450)),
                         (inst, (-100, 0)), (rand, (-100, -300)), (lift, (100, -300)),
                         (move, (150, 0)), (gout, (350, 0)), (index, (-1300, -150)),
                         (keep_id, (-1100, -100)), (gid, (-300, -400))):
        node.location = (x, y)
    return group


def native_node_group() -> "bpy.types.GeometryNodeTree":
    """Geometry nodes for native splat point clouds, shared by all of them (the points stay
    GAUSSIAN_SPLAT):
      1. a random depth jitter: Set Position by up to ±DEPTH_JITTER·K·σ_max per axis (below);
      2. the opacity law: radiance:base.w ← α · clamp(Fade · (1 − cover · Fade next), 0, 1), with
         Fade and Fade next the modifier inputs the level rig keys (FADE_INPUT, FADE_NEXT_INPUT);
      3. the render-time cull (render_cull: Cover start, Cover frames, Hidden from)."""
    group = current_group(NATIVE_GROUP_NAME, (FADE_INPUT, FADE_NEXT_INPUT, COVER_START, COVER_FRAMES, HIDDEN_FROM))
    if group is not None:
        return group
    group = bpy.data.node_groups.new(NATIVE_GROUP_NAME, "GeometryNodeTree")
    group.interface.new_socket(name="Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    for name, default in ((FADE_INPUT, 1.0), (FADE_NEXT_INPUT, 0.0)):
        sock = group.interface.new_socket(name=name, in_out="INPUT", socket_type="NodeSocketFloat")
        sock.default_value, sock.min_value, sock.max_value = default, 0.0, 1.0
    cull_inputs(group)
    group.interface.new_socket(name="Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    gin, gout = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")

    def math(op, a, b, clamp=False):
        node = nodes.new("ShaderNodeMath")
        node.operation, node.use_clamp = op, clamp
        for k, v in enumerate((a, b)):
            if isinstance(v, (int, float)):
                node.inputs[k].default_value = v
            else:
                links.new(v, node.inputs[k])
        return node.outputs[0]

    # 1. Exactly coplanar splats (a flat surface, one level over the next) must not share a
    # depth: a Cycles ray continuing through a transparent hit skips splats at the same distance
    # (a wall of them measured 0.80 instead of 0.86 red). Seeded by the index, before the cull,
    # so the offsets stay the same when Gaussians are dropped.
    scale = named_attribute(nodes, SCALE_ATTR, "FLOAT_VECTOR")
    sep = nodes.new("ShaderNodeSeparateXYZ")
    links.new(scale.outputs["Attribute"], sep.inputs[0])
    reach = math("MULTIPLY", math("MAXIMUM", math("MAXIMUM", sep.outputs["X"], sep.outputs["Y"]), sep.outputs["Z"]),
                 K_SIGMA * DEPTH_JITTER)
    rand = nodes.new("FunctionNodeRandomValue")
    rand.data_type = "FLOAT_VECTOR"
    enabled(rand.inputs, "Min").default_value = (-1.0, -1.0, -1.0)
    enabled(rand.inputs, "Max").default_value = (1.0, 1.0, 1.0)
    offset = nodes.new("ShaderNodeVectorMath")
    offset.operation = "SCALE"
    links.new(enabled(rand.outputs, "Value"), offset.inputs[0])
    links.new(reach, offset.inputs["Scale"])
    move = nodes.new("GeometryNodeSetPosition")
    links.new(gin.outputs["Geometry"], move.inputs["Geometry"])
    links.new(offset.outputs["Vector"], move.inputs["Offset"])
    # 2. The opacity law in the splat's own α: Cycles skips a splat whose α is 0 (a splat made
    # transparent by a material instead still takes its place on the ray: measured, a covered
    # level over the next darkened a frame from 0.49 to 0.29). radiance:base is read and written
    # as a colour (Named Attribute has no FLOAT4; the colour keeps values outside [0, 1]).
    base = named_attribute(nodes, BASE_ATTR, "FLOAT_COLOR")
    split = nodes.new("FunctionNodeSeparateColor")
    links.new(enabled(base.outputs, "Attribute"), split.inputs["Color"])
    cover = named_attribute(nodes, COVER_ATTR, "FLOAT")
    keep = math("SUBTRACT", 1.0, math("MULTIPLY", enabled(cover.outputs, "Attribute"), gin.outputs[FADE_NEXT_INPUT]))
    alpha = math("MULTIPLY", split.outputs["Alpha"], math("MULTIPLY", gin.outputs[FADE_INPUT], keep, clamp=True))
    join = nodes.new("FunctionNodeCombineColor")
    for channel in ("Red", "Green", "Blue"):
        links.new(split.outputs[channel], join.inputs[channel])
    links.new(alpha, join.inputs["Alpha"])
    store = nodes.new("GeometryNodeStoreNamedAttribute")
    store.data_type, store.domain = "FLOAT_COLOR", "POINT"
    store.inputs["Name"].default_value = BASE_ATTR
    links.new(move.outputs["Geometry"], store.inputs["Geometry"])
    links.new(join.outputs["Color"], enabled(store.inputs, "Value"))
    # 3. the cull
    cull = render_cull(group, gin, store.outputs["Geometry"])
    links.new(cull.outputs["Geometry"], gout.inputs[0])
    for node, (x, y) in ((gin, (-1900, 0)), (scale, (-1900, 500)), (sep, (-1700, 500)), (rand, (-1300, 700)),
                         (offset, (-1100, 600)), (move, (-900, 300)), (base, (-1300, 300)), (split, (-1100, 300)),
                         (cover, (-1300, 150)), (join, (-700, 300)), (store, (-500, 200)), (gout, (0, 0))):
        node.location = (x, y)
    return group


def fade_channel(obj) -> tuple:
    """Where the level rig keys obj's cross-fade → (the ID holding the F-curves, the data path of
    fade, the data path of fade_next): the material's FADE_NODE / FADE_NEXT_NODE Value nodes on
    the quad path, the modifier's FADE_INPUT / FADE_NEXT_INPUT on the native one."""
    mod = next((m for m in obj.modifiers if m.type == "NODES" and m.node_group is not None
                and FADE_INPUT in m.node_group.interface.items_tree), None)
    if mod is None:
        paths = (f'nodes["{node}"].outputs[0].default_value' for node in (FADE_NODE, FADE_NEXT_NODE))
        return (obj.data.materials[0].node_tree, *paths)
    items = mod.node_group.interface.items_tree
    return (obj, *(input_path(mod, items[name].identifier) for name in (FADE_INPUT, FADE_NEXT_INPUT)))


def input_path(mod, identifier: str) -> str:
    """The data path from the object to a geometry nodes modifier input (5.x: properties.inputs)."""
    props = getattr(mod, "properties", None)
    if props is not None and hasattr(props, "inputs"):
        return getattr(props.inputs, identifier).path_from_id("value")
    return f'modifiers["{mod.name}"]["{identifier}"]'


def fade_values(obj) -> tuple[float, float]:
    """obj's current (fade, fade_next), as the level rig keyed them (either path)."""
    owner, *paths = fade_channel(obj)
    return tuple(float(owner.path_resolve(p)) for p in paths)


def no_light_sampling(mat) -> None:
    """Cycles: do not treat the material's emission as a light. Splats only emit (nothing in the
    scene scatters light), so sampling them as lights is wasted: with one light per instanced quad
    it costs a light tree over every Gaussian at each frame's sync."""
    cycles = getattr(mat, "cycles", None)
    if cycles is not None and hasattr(cycles, "emission_sampling"):
        cycles.emission_sampling = "NONE"


def splat_material(name: str) -> "bpy.types.Material":
    """Emission over Transparent, a = fade · (1 − cover · fade_next) · opacity · exp(−½ K² |p|²)
    (see the module docstring; cover and fade_next are the level rig's cross-fade)."""
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # 4.x: materials start without nodes; 5.x always has them
        mat.use_nodes = True
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = "DITHERED"  # EEVEE: stochastic transparency, order-independent
    no_light_sampling(mat)
    nt = mat.node_tree
    nt.nodes.clear()
    nodes, links = nt.nodes, nt.links

    def attribute(name_, x, y):
        node = nodes.new("ShaderNodeAttribute")
        node.attribute_type, node.attribute_name, node.location = "INSTANCER", name_, (x, y)
        return node

    def math(op, a, b, x, y, clamp=False):
        node = nodes.new("ShaderNodeMath")
        node.operation, node.use_clamp, node.location = op, clamp, (x, y)
        for i, v in enumerate((a, b)):
            if isinstance(v, (int, float)):
                node.inputs[i].default_value = v
            elif v is not None:
                links.new(v, node.inputs[i])
        return node.outputs[0]

    color, opacity = attribute(COLOR_ATTR, -400, 200), attribute(OPACITY_ATTR, -400, -250)
    coord = nodes.new("ShaderNodeTexCoord")
    coord.location = (-900, 0)
    r2 = nodes.new("ShaderNodeVectorMath")
    r2.operation, r2.location = "DOT_PRODUCT", (-700, 0)
    links.new(coord.outputs["Object"], r2.inputs[0])
    links.new(coord.outputs["Object"], r2.inputs[1])
    fade = nodes.new("ShaderNodeValue")
    fade.name = fade.label = FADE_NODE
    fade.outputs[0].default_value = 1.0
    fade.location = (-400, -400)
    fade_next = nodes.new("ShaderNodeValue")
    fade_next.name = fade_next.label = FADE_NEXT_NODE
    fade_next.outputs[0].default_value = 0.0
    fade_next.location = (-400, -550)
    cover = attribute(COVER_ATTR, -400, -700)  # 0 where the attribute does not exist
    keep = math("SUBTRACT", 1.0, math("MULTIPLY", cover.outputs["Fac"], fade_next.outputs[0], -200, -600),
                0, -600)
    g = math("EXPONENT", math("MULTIPLY", r2.outputs["Value"], -0.5 * K_SIGMA ** 2, -500, 0), None, -300, 0)
    alpha = math("MULTIPLY", math("MULTIPLY", g, opacity.outputs["Fac"], -100, -100),
                 math("MULTIPLY", fade.outputs[0], keep, 100, -400), 300, -100, clamp=True)
    emit = nodes.new("ShaderNodeEmission")
    emit.location = (100, 150)
    links.new(color.outputs["Color"], emit.inputs["Color"])
    clear = nodes.new("ShaderNodeBsdfTransparent")
    clear.location = (100, 300)
    mix = nodes.new("ShaderNodeMixShader")
    mix.location = (350, 100)
    links.new(alpha, mix.inputs["Fac"])
    links.new(clear.outputs[0], mix.inputs[1])
    links.new(emit.outputs[0], mix.inputs[2])
    out = nodes.new("ShaderNodeOutputMaterial")
    out.location = (550, 100)
    links.new(mix.outputs[0], out.inputs["Surface"])
    return mat


def modifier_input(mod, identifier: str):
    props = getattr(mod, "properties", None)
    if props is not None and hasattr(props, "inputs"):
        return getattr(props.inputs, identifier).value
    return mod[identifier]


def import_splats(scene, gaussians: Gaussians, name: str, job_id: str = "", collection=None,
                  kind: str = KIND, extra: dict | None = None, native: bool | None = None) -> "bpy.types.Object":
    """A splat object for activated gaussians, linked to collection (default: the Zoomscape one):
    a native GAUSSIAN_SPLAT point cloud (native_splats(): Blender 5.3+) with its modifier, whose
    Fade inputs the level rig keys, or (4.2–5.2) a mesh with the instancing modifier and its own
    material, whose FADE_NODE the level rig keys (fade_channel). native: force a path (None:
    this Blender's; True before 5.3 is an error)."""
    if native is None:
        native = native_splats()
    elif native and not native_splats():
        raise ValueError(f"native splats: need Blender {'.'.join(map(str, NATIVE_SINCE))} or later, "
                         f"this is {bpy.app.version_string}")
    data = splat_pointcloud(name, gaussians, extra) if native else splat_mesh(name, gaussians, extra)
    obj = bpy.data.objects.new(name, data)
    obj[JOB_KEY], obj["zoomscape_kind"] = job_id, kind
    obj["zoomscape_splats"] = "native" if native else "quads"
    mod = obj.modifiers.new("Zoomscape Splats", "NODES")
    if native:  # no material: Blender's own splat shading renders radiance:base as generated
        mod.node_group = native_node_group()
    else:
        mat = splat_material(name)
        data.materials.append(mat)
        group = splat_node_group()
        mod.node_group = group
        set_modifier_input(mod, group.interface.items_tree["Material"].identifier, mat)
    if "visible_shadow" in obj.bl_rna.properties:  # emissive splats cast no shadows
        obj.visible_shadow = False
    prepare_render_settings(scene)
    (collection or ensure_collection(scene)).objects.link(obj)
    return obj


