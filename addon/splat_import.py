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
"""
from __future__ import annotations

import numpy as np

import bpy

from .importers import (JOB_KEY, current_group, ensure_collection, named_attribute,  # noqa: F401
                        prepare_render_settings, set_modifier_input, srgb_to_linear)
from .wire.splats import Gaussians

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


def enabled(sockets, name: str):
    """The first enabled socket called name (4.2 keeps one hidden socket per data type)."""
    return next(s for s in sockets if s.name == name and s.enabled)


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
    for name, default in ((COVER_START, NEVER), (COVER_FRAMES, 1.0), (HIDDEN_FROM, NEVER)):
        sock = group.interface.new_socket(name=name, in_out="INPUT", socket_type="NodeSocketFloat")
        sock.default_value = default
    group.interface.new_socket(name="Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    gin, gout = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
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
    # the depth jitter below is random per Gaussian; key it by the index before the cull (the
    # ``id`` attribute) so the Gaussians that remain keep their depth order when others are dropped
    index = nodes.new("GeometryNodeInputIndex")
    keep_id = nodes.new("GeometryNodeStoreNamedAttribute")
    keep_id.data_type, keep_id.domain = "INT", "POINT"
    keep_id.inputs["Name"].default_value = "id"
    gid = nodes.new("GeometryNodeInputID")
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
    links.new(gin.outputs["Geometry"], keep_id.inputs["Geometry"])
    links.new(index.outputs[0], enabled(keep_id.inputs, "Value"))
    links.new(keep_id.outputs["Geometry"], cull.inputs["Geometry"])
    links.new(render_only.outputs[0], cull.inputs["Selection"])
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
                         (move, (150, 0)), (gout, (350, 0)), (time, (-1500, -500)),
                         (since, (-1300, -500)), (fade_next, (-1100, -500)), (cover, (-1300, -700)),
                         (hidden, (-900, -550)), (gone, (-700, -550)), (viewport, (-700, -750)),
                         (render_only, (-500, -600)), (cull, (-300, -100)), (index, (-1300, -150)),
                         (keep_id, (-1100, -100)), (gid, (-300, -400)), (late, (-900, -850)),
                         (either, (-700, -650))):
        node.location = (x, y)
    return group


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
                  kind: str = KIND, extra: dict | None = None) -> "bpy.types.Object":
    """A splat object for activated gaussians (mesh + attributes + instancing modifier + its own
    material, whose FADE_NODE the level rig keys), linked to collection (default: the Zoomscape one)."""
    mesh = splat_mesh(name, gaussians, extra)
    obj = bpy.data.objects.new(name, mesh)
    obj[JOB_KEY], obj["zoomscape_kind"] = job_id, kind
    mat = splat_material(name)
    mesh.materials.append(mat)
    mod = obj.modifiers.new("Zoomscape Splats", "NODES")
    group = splat_node_group()
    mod.node_group = group
    set_modifier_input(mod, group.interface.items_tree["Material"].identifier, mat)
    if "visible_shadow" in obj.bl_rna.properties:  # emissive splats cast no shadows
        obj.visible_shadow = False
    prepare_render_settings(scene)
    (collection or ensure_collection(scene)).objects.link(obj)
    return obj


