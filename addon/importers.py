"""Results → Blender objects: a point cloud (wire.ply.PointCloud) becomes a mesh of loose vertices
with a colour and a radius attribute (bulk ``foreach_set``), shown as points by a geometry nodes modifier
(Mesh to Points → Set Material) with an emission material that reads the colour attribute, so it
renders the same in Cycles and EEVEE.

The radius attribute is the PLY's radius unchanged: the world radius of the disc that covers the
point's source pixel, half the pixel diagonal at its depth (z·√½/f). Mesh to Points makes it the
point's radius; Cycles renders each point as a sphere of that radius, whose silhouette from the
source camera is a disc of radius √½ px about the pixel centre (an ellipse at least that wide off
axis) that contains the whole pixel, so a view's own points leave no gap in its render. EEVEE draws
a point as a camera-facing pyramid whose outline is the square inscribed in that disc (a diamond
with corners at the radius), which covers about 85 % of the view at this radius.

The material mixes the emission over Transparent by its ``fade_out`` Value node (0 = shown): the
level rig gives a cloud in its rig its own copy of the material (the modifier's Material input) and
keys it to fade the cloud out as the levels take over.

Lift (native splats only, Blender 5.3+): an optional point attribute ``zs_lift`` (object units)
moves each point that far toward the scene camera along the ray through it, with its radius
shrunk by the same ratio, so from the camera the cloud covers exactly the same pixels (absent:
0, the cloud as it is). Why, as measured in Cycles 5.3: a native splat seen through a transparent
surface inside its bounding sphere (about 3 σ from its centre; the ray goes on from that hit)
renders differently from the same splat seen directly: a flat Gaussian wall behind a fully
transparent plane 0.01 m in front differs by 0.042 mean |Δ| (two seeds: 0.009) and is darker;
from 3.04 σ away the render is bit-identical. The world's cloud lies on level 0's surface, so
while it fades out (transparent) over level 0 every ray crosses such a hit: level 0 rendered
differently until the frame the cloud left the render, a pop of 0.097 mean |Δ| (the quads: 0.057).
:func:`lift_distances` lifts each point just past the reach of the level-0 Gaussians (the import
sets it for a cloud in a level rig on 5.3+: runner.lift_points_over_level_0).
"""
from __future__ import annotations

import numpy as np

import bpy

from .wire.ply import PointCloud

COLLECTION = "Zoomscape"
COLOR_ATTR = "zs_color"
RADIUS_ATTR = "zs_radius"
GROUP_NAME = "Zoomscape Points"
MATERIAL_NAME = "Zoomscape Points"
FADE_OUT_NODE = "fade_out"  # the material's Value node: 0 = shown, 1 = fully transparent
HIDDEN_FROM = "Hidden from"  # node group input: renders drop the cloud from this frame on
LIFT_ATTR = "zs_lift"  # optional point attribute: move the point this far toward the camera
LIFT_REACH = 3.2  # σ: how far a native splat reaches in Cycles 5.3 (measured: bit-identical from 3.04 σ)
NEVER = 1.0e9
JOB_KEY = "zoomscape_job"


def srgb_to_linear(c) -> np.ndarray:
    """IEC 61966-2-1 decoding of display sRGB c (any shape; clipped to [0, 1]) → float32 linear."""
    c = np.clip(np.asarray(c, dtype=np.float32), 0.0, 1.0)
    return np.where(c <= 0.04045, c / np.float32(12.92),
                    ((c + np.float32(0.055)) / np.float32(1.055)) ** np.float32(2.4)).astype(np.float32)


def linear_rgba(rgb: np.ndarray) -> np.ndarray:
    """rgb: [N, 3] float display sRGB in [0, 1] → [N, 4] float32 linear RGBA (alpha 1)."""
    rgba = np.ones((rgb.shape[0], 4), dtype=np.float32)
    rgba[:, :3] = srgb_to_linear(rgb)
    return rgba


def ensure_collection(scene) -> "bpy.types.Collection":
    """The scene's "Zoomscape" collection (created and linked when missing)."""
    coll = bpy.data.collections.get(COLLECTION)
    if coll is None:
        coll = bpy.data.collections.new(COLLECTION)
    if coll.name not in scene.collection.children:
        scene.collection.children.link(coll)
    return coll


def remove_job_objects(job_id: str, kinds=("points",)) -> int:
    """Delete the objects (and their meshes) made earlier for job_id → how many."""
    doomed = [o for o in bpy.data.objects
              if o.get(JOB_KEY) == job_id and o.get("zoomscape_kind") in kinds]
    for obj in doomed:
        data = obj.data
        bpy.data.objects.remove(obj, do_unlink=True)
        if data is not None and data.users == 0:
            if isinstance(data, bpy.types.Mesh):
                bpy.data.meshes.remove(data)
            elif isinstance(data, bpy.types.PointCloud):  # native splats (Blender 5.3+)
                bpy.data.pointclouds.remove(data)
            elif isinstance(data, bpy.types.Camera):
                bpy.data.cameras.remove(data)
    return len(doomed)


def points_mesh(name: str, cloud: PointCloud) -> "bpy.types.Mesh":
    """A mesh of len(cloud) loose vertices with COLOR_ATTR (FLOAT_COLOR, linear) and RADIUS_ATTR
    (FLOAT: the cloud's radius as it is, or default_radius when it has none)."""
    mesh = bpy.data.meshes.new(name)
    n = len(cloud)
    mesh.vertices.add(n)
    # The "position" attribute is the vertices' co; its foreach_set copies the raw buffer (about
    # 100× faster than vertices.foreach_set("co"), which goes through RNA per vertex). The cloud's
    # xyz is float64; Blender holds float32.
    mesh.attributes["position"].data.foreach_set(
        "vector", np.ascontiguousarray(cloud.xyz, dtype=np.float32).ravel())
    # Create each attribute, then look it up by name: holding a Python reference to one attribute
    # across attributes.new() can crash Blender (the attribute array is reallocated).
    mesh.attributes.new(COLOR_ATTR, "FLOAT_COLOR", "POINT")
    mesh.attributes.new(RADIUS_ATTR, "FLOAT", "POINT")
    mesh.attributes[COLOR_ATTR].data.foreach_set("color", linear_rgba(cloud.rgb).ravel())
    radius = cloud.radius if cloud.radius is not None else default_radius(cloud.xyz)
    mesh.attributes[RADIUS_ATTR].data.foreach_set(
        "value", np.ascontiguousarray(radius, dtype=np.float32))
    mesh.update()
    return mesh


def default_radius(xyz: np.ndarray) -> np.ndarray:
    """[N] radius for files without one: bounding-box diagonal / (2·√N), about the spacing of
    N points spread over a surface."""
    if len(xyz) == 0:
        return np.zeros(0, dtype=np.float32)
    extent = float(np.linalg.norm(xyz.max(0) - xyz.min(0)))
    return np.full(len(xyz), extent / (2.0 * np.sqrt(len(xyz))) + 1e-6, dtype=np.float32)


def points_material() -> "bpy.types.Material":
    """Emission material whose colour is the COLOR_ATTR attribute, mixed over Transparent by its
    FADE_OUT_NODE value (0: opaque; shared by all point objects until a rig fades one)."""
    mat = bpy.data.materials.get(MATERIAL_NAME)
    if mat is not None:
        return mat
    mat = bpy.data.materials.new(MATERIAL_NAME)
    if mat.node_tree is None:  # 4.x: materials start without nodes; 5.x always has them
        mat.use_nodes = True
    nt = mat.node_tree
    nt.nodes.clear()
    attr = nt.nodes.new("ShaderNodeAttribute")
    attr.attribute_type = "GEOMETRY"
    attr.attribute_name = COLOR_ATTR
    emit = nt.nodes.new("ShaderNodeEmission")
    emit.inputs["Strength"].default_value = 1.0
    fade = nt.nodes.new("ShaderNodeValue")
    fade.name = fade.label = FADE_OUT_NODE
    fade.outputs[0].default_value = 0.0
    clear = nt.nodes.new("ShaderNodeBsdfTransparent")
    mix = nt.nodes.new("ShaderNodeMixShader")  # Fac = fade out: 0 → emission, 1 → transparent
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = "DITHERED"  # EEVEE: stochastic transparency while fading
    if hasattr(getattr(mat, "cycles", None), "emission_sampling"):
        mat.cycles.emission_sampling = "NONE"  # an emitter lighting nothing: no light tree over points
    nt.links.new(attr.outputs["Color"], emit.inputs["Color"])
    nt.links.new(fade.outputs[0], mix.inputs["Fac"])
    nt.links.new(emit.outputs["Emission"], mix.inputs[1])
    nt.links.new(clear.outputs[0], mix.inputs[2])
    nt.links.new(mix.outputs[0], out.inputs["Surface"])
    for node, (x, y) in ((attr, (-400, 0)), (emit, (-150, 0)), (fade, (-400, 250)),
                         (clear, (-150, 150)), (mix, (100, 50)), (out, (300, 50))):
        node.location = (x, y)
    return mat


def native_path() -> bool:
    """Whether this Blender renders the Gaussians as native splats (splat_import.native_splats)."""
    from .splat_import import native_splats  # splat_import imports this module

    return native_splats()


def current_group(name: str, inputs) -> "bpy.types.GeometryNodeTree | None":
    """The node group called name if it has all these inputs; one made by an earlier version
    (fewer inputs, e.g. in an old .blend) is renamed out of the way and None returned."""
    group = bpy.data.node_groups.get(name)
    if group is None or all(i in group.interface.items_tree for i in inputs):
        return group
    group.name = f"{name} (earlier version)"
    return None


def named_attribute(nodes, name: str, data_type: str):
    """A geometry-nodes Named Attribute node in nodes reading attribute `name` as data_type."""
    node = nodes.new("GeometryNodeInputNamedAttribute")
    node.data_type = data_type
    node.inputs["Name"].default_value = name
    return node


def points_node_group() -> "bpy.types.GeometryNodeTree":
    """Geometry nodes: Mesh to Points (radius = RADIUS_ATTR) → on the native path the lift (module
    docstring: LIFT_ATTR, toward the scene camera, radius × (L − d)/L with L the distance to the
    camera and d = min(lift, L/2)) → Set Material(the Material input); renders (not the viewport)
    drop every point from the frame HIDDEN_FROM on (a rig sets it to where the cloud has faded
    out; the default never comes)."""
    lift = native_path()  # the lift is for native splats only: 4.2–5.2 keep the group as it was
    group = current_group(GROUP_NAME, ("Material", HIDDEN_FROM))
    if group is not None and bool(group.get("zoomscape_lift", False)) == lift:
        return group
    if group is not None:  # made by an earlier version or another Blender line (with / without the lift)
        group.name = f"{GROUP_NAME} (earlier version)"
    group = bpy.data.node_groups.new(GROUP_NAME, "GeometryNodeTree")
    group.interface.new_socket(name="Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    group.interface.new_socket(name="Material", in_out="INPUT", socket_type="NodeSocketMaterial")
    group.interface.new_socket(name=HIDDEN_FROM, in_out="INPUT", socket_type="NodeSocketFloat").default_value = NEVER
    group.interface.new_socket(name="Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    gin = nodes.new("NodeGroupInput")
    gout = nodes.new("NodeGroupOutput")
    time = nodes.new("GeometryNodeInputSceneTime")
    late = nodes.new("FunctionNodeCompare")
    late.data_type, late.operation = "FLOAT", "GREATER_EQUAL"
    viewport = nodes.new("GeometryNodeIsViewport")
    render_only = nodes.new("FunctionNodeBooleanMath")
    render_only.operation = "NIMPLY"  # late and not viewport
    drop = nodes.new("GeometryNodeDeleteGeometry")
    drop.domain = "POINT"
    links.new(time.outputs["Frame"], next(s for s in late.inputs if s.name == "A" and s.enabled))
    links.new(gin.outputs[HIDDEN_FROM], next(s for s in late.inputs if s.name == "B" and s.enabled))
    links.new(late.outputs[0], render_only.inputs[0])
    links.new(viewport.outputs[0], render_only.inputs[1])
    radius = named_attribute(nodes, RADIUS_ATTR, "FLOAT")
    to_points = nodes.new("GeometryNodeMeshToPoints")
    to_points.mode = "VERTICES"
    set_mat = nodes.new("GeometryNodeSetMaterial")
    links.new(gin.outputs["Material"], set_mat.inputs["Material"])
    links.new(gin.outputs["Geometry"], to_points.inputs["Mesh"])
    links.new(radius.outputs["Attribute"], to_points.inputs["Radius"])
    links.new(lift_points(group, to_points.outputs["Points"]) if lift else to_points.outputs["Points"],
              drop.inputs["Geometry"])
    links.new(render_only.outputs[0], drop.inputs["Selection"])
    links.new(drop.outputs["Geometry"], set_mat.inputs["Geometry"])
    links.new(set_mat.outputs["Geometry"], gout.inputs[0])
    for node, (x, y) in ((gin, (-600, 0)), (radius, (-400, 0)), (to_points, (-150, 0)), (set_mat, (300, 0)),
                         (gout, (500, 0)), (time, (-600, -250)), (late, (-400, -250)),
                         (viewport, (-400, -450)), (render_only, (-150, -300)), (drop, (100, -100))):
        node.location = (x, y)
    group["zoomscape_lift"] = lift
    return group


def lift_points(group, points) -> "bpy.types.NodeSocket":
    """Add the lift of the module docstring to group after the socket points → its output socket.
    The camera comes in the object's own space (Object Info, Relative), so the lift follows a
    scaling rig and a moving camera; without LIFT_ATTR, d = 0 and the points stay exactly as
    they are (radius × L/L)."""
    nodes, links = group.nodes, group.links
    camera = nodes.new("GeometryNodeInputActiveCamera")
    info = nodes.new("GeometryNodeObjectInfo")
    info.transform_space = "RELATIVE"
    links.new(camera.outputs[0], info.inputs["Object"])
    position = nodes.new("GeometryNodeInputPosition")
    to_cam = nodes.new("ShaderNodeVectorMath")
    to_cam.operation = "SUBTRACT"
    links.new(info.outputs["Location"], to_cam.inputs[0])
    links.new(position.outputs[0], to_cam.inputs[1])
    length = nodes.new("ShaderNodeVectorMath")
    length.operation = "LENGTH"
    links.new(to_cam.outputs[0], length.inputs[0])
    direction = nodes.new("ShaderNodeVectorMath")
    direction.operation = "NORMALIZE"
    links.new(to_cam.outputs[0], direction.inputs[0])

    def math(op, a, b):
        node = nodes.new("ShaderNodeMath")
        node.operation = op
        for k, v in enumerate((a, b)):
            if isinstance(v, (int, float)):
                node.inputs[k].default_value = v
            else:
                links.new(v, node.inputs[k])
        return node.outputs[0]

    lift = named_attribute(nodes, LIFT_ATTR, "FLOAT")
    dist = math("MAXIMUM", next(s for s in length.outputs if s.name == "Value"), 1e-12)
    d = math("MINIMUM", next(s for s in lift.outputs if s.name == "Attribute" and s.enabled),
             math("MULTIPLY", dist, 0.5))
    radius = nodes.new("GeometryNodeInputRadius")
    set_radius = nodes.new("GeometryNodeSetPointRadius")
    links.new(points, set_radius.inputs["Points"])
    links.new(math("MULTIPLY", radius.outputs[0], math("DIVIDE", math("SUBTRACT", dist, d), dist)),
              set_radius.inputs["Radius"])
    offset = nodes.new("ShaderNodeVectorMath")
    offset.operation = "SCALE"
    links.new(direction.outputs[0], offset.inputs[0])
    links.new(d, offset.inputs["Scale"])
    move = nodes.new("GeometryNodeSetPosition")
    links.new(set_radius.outputs[0], move.inputs["Geometry"])
    links.new(offset.outputs[0], move.inputs["Offset"])
    for node, (x, y) in ((camera, (-150, 400)), (info, (50, 400)), (position, (50, 200)), (to_cam, (250, 350)),
                         (length, (450, 400)), (direction, (450, 250)), (lift, (450, 550)),
                         (radius, (650, 550)), (set_radius, (850, 300)), (offset, (850, 150)), (move, (1050, 200))):
        node.location = (x, y)
    return move.outputs["Geometry"]


def prepare_render_settings(scene, min_transparent_bounces: int = 64) -> None:
    """Cycles settings that splats and fading points need (each raised, never lowered):

    - transparent_max_bounces ≥ min_transparent_bounces: Cycles stops a path after that many
      transparent hits, and a pixel crosses dozens of overlapping quads (the default is 8);
    - min_transparent_bounces (Cycles' "Min Transparent Bounces") up to transparent_max_bounces:
      past it Cycles ends a path by Russian roulette (kept with probability √throughput), which
      through stacked splats turns exact α-compositing into noise. At the demo's size, 16 samples
      with the roulette are as noisy as two renders 25 dB apart (29 dB on a dive frame); without
      it 4 samples give 41 dB (54 dB), at 1.5× (up to 4.7× on a dive frame) the time per sample.
    """
    cycles = getattr(scene, "cycles", None)
    if cycles is None:
        return
    if cycles.transparent_max_bounces < min_transparent_bounces:
        cycles.transparent_max_bounces = min_transparent_bounces
    if cycles.min_transparent_bounces < cycles.transparent_max_bounces:
        cycles.min_transparent_bounces = cycles.transparent_max_bounces


def lift_distances(xyz, radius, matrix_world, f_px: float, sigma_px: float) -> np.ndarray:
    """How far to lift each point of a cloud over native splats (module docstring) → [N] float32.

    xyz: [N, 3] points and radius: [N] their radii, in the units of the camera at matrix_world
    (Blender camera-to-world [4, 4]; focal length f_px in pixels); sigma_px: the largest standard
    deviation, in that camera's pixels, of the Gaussians behind the cloud. A Gaussian at depth z
    then reaches LIFT_REACH · sigma_px · z / f_px, and a point's own sphere its radius in front of
    its centre: lifted by their sum, no transparent hit of the cloud lies inside a splat's reach.
    """
    M = np.asarray(matrix_world, dtype=np.float64).reshape(4, 4)
    cam = (np.asarray(xyz, dtype=np.float64) - M[:3, 3]) @ M[:3, :3]  # camera space, looking down −Z
    z = np.maximum(-cam[:, 2], 0.0)
    return (LIFT_REACH * float(sigma_px) * z / float(f_px) + np.asarray(radius, dtype=np.float64)).astype(np.float32)


def set_lift(obj, lift: np.ndarray) -> None:
    """Give point object obj the per-point lift [N] (LIFT_ATTR; replaced when present)."""
    mesh = obj.data
    if LIFT_ATTR in mesh.attributes:
        mesh.attributes.remove(mesh.attributes[LIFT_ATTR])
    mesh.attributes.new(LIFT_ATTR, "FLOAT", "POINT")
    mesh.attributes[LIFT_ATTR].data.foreach_set("value", np.ascontiguousarray(lift, dtype=np.float32))
    mesh.update()


def import_points(scene, cloud: PointCloud, name: str, job_id: str = "") -> "bpy.types.Object":
    """A point object for cloud in the Zoomscape collection; replaces this job's earlier import."""
    if job_id:
        remove_job_objects(job_id)
    mesh = points_mesh(name, cloud)
    obj = bpy.data.objects.new(name, mesh)
    obj[JOB_KEY] = job_id
    obj["zoomscape_kind"] = "points"
    mat = points_material()
    mod = obj.modifiers.new("Zoomscape Points", "NODES")
    mod.node_group = points_node_group()
    set_points_material(obj, mat)
    prepare_render_settings(scene)
    ensure_collection(scene).objects.link(obj)
    return obj


def set_points_material(obj, mat) -> None:
    """Make mat the material of point object obj (its mesh slot and its modifier's Material)."""
    obj.data.materials.clear()
    obj.data.materials.append(mat)
    mod = obj.modifiers["Zoomscape Points"]
    set_modifier_input(mod, mod.node_group.interface.items_tree["Material"].identifier, mat)


def set_modifier_input(mod, identifier: str, value) -> None:
    """Set a geometry nodes modifier input (an ID property in 4.x, ``mod.properties.inputs`` in 5.x)."""
    props = getattr(mod, "properties", None)
    if props is not None and hasattr(props, "inputs"):
        getattr(props.inputs, identifier).value = value
    else:
        mod[identifier] = value
