"""The sidebar panel draws every state with real property and operator names (a recording layout
stands in for Blender's UI, which does not exist in background mode)."""
import os

import pytest

import bpy

from test_thumbnails import write_level_results

LAYOUT = bpy.types.UILayout.bl_rna


class RecordingLayout:
    """Accepts UILayout calls, checks the names they use against UILayout's RNA, and records them."""

    def __init__(self, log):
        object.__setattr__(self, "log", log)

    def __getattr__(self, name):  # row(), column(), box(), separator(), label(), progress() ...
        assert name in LAYOUT.functions, f"UILayout has no function {name!r}"
        params = LAYOUT.functions[name].parameters

        def call(*args, **kw):
            unknown = set(kw) - {p.identifier for p in params}
            assert not unknown, f"UILayout.{name} has no parameter(s) {unknown}"
            self.log.append((name, args, kw))
            return RecordingLayout(self.log)
        return call

    def __setattr__(self, name, value):  # scale_y, enabled, alert ...
        assert name in LAYOUT.properties, f"UILayout has no property {name!r}"
        object.__setattr__(self, name, value)

    def prop(self, data, name, **kw):
        assert name in data.bl_rna.properties, f"{type(data).__name__} has no property {name!r}"
        if name == "token":  # the token must come from the extension's preferences, never the scene
            assert isinstance(data, bpy.types.AddonPreferences), type(data).__name__
        self.log.append(("prop", (name,), kw))

    def operator(self, idname, **kw):
        module, op = idname.split(".")
        rna = getattr(getattr(bpy.ops, module), op).get_rna_type()  # raises KeyError if unknown
        self.log.append(("operator", (idname,), kw))
        return OperatorProperties(self.log, idname, rna)

    def template_list(self, list_type, list_id, data, collection, active_data, active, **kw):
        assert hasattr(bpy.types, list_type)
        assert collection in data.bl_rna.properties and active in active_data.bl_rna.properties
        self.log.append(("template_list", (collection,), kw))


class OperatorProperties:
    """What layout.operator() returns: property assignments are checked and recorded."""

    def __init__(self, log, idname, rna):
        object.__setattr__(self, "log", log)
        object.__setattr__(self, "idname", idname)
        object.__setattr__(self, "rna", rna)

    def __setattr__(self, name, value):
        assert name in self.rna.properties, f"{self.idname} has no property {name!r}"
        self.log.append(("operator_property", (self.idname, name, value), {}))


def draw(zs):
    log = []
    panel = bpy.types.ZOOMSCAPE_PT_panel
    fake = type("P", (), {"layout": RecordingLayout(log)})()
    panel.draw(fake, bpy.context)
    return log


@pytest.mark.parametrize("state", ["fresh", "failed", "done"])
def test_panel_draws(zs, state):
    props = bpy.context.scene.zoomscape
    if state == "failed":
        props.job_state, props.error = "error", "cannot reach the Zoomscape backend at http://x:1 (refused); start it"
    if state == "done":
        props.job_id, props.job_state, props.stage, props.progress = "abc", "done", "imported", 1.0
        props.camera_source = "COLLECTION"
    log = draw(zs)
    ops = [a[0] for name, a, kw in log if name == "operator"]
    for op in ("zoomscape.discover", "zoomscape.connect", "zoomscape.generate", "zoomscape.level_add",
               "zoomscape.level_remove", "zoomscape.level_move", "zoomscape.import_results",
               "zoomscape.build_zoom_path"):
        assert op in ops
    labels = [kw.get("text", "") for name, a, kw in log if name == "label"]
    props_drawn = [a[0] for name, a, kw in log if name == "prop"]
    assert {"scene_prompt", "zoom_factor", "zoom_camera", "zoom_target", "seed", "engine"} <= set(props_drawn)
    progress = [kw for name, a, kw in log if name == "progress"]
    if state == "fresh":
        assert progress == [] and not any("cannot reach" in t for t in labels)
    if state == "failed":
        assert "cannot reach the Zoomscape backend" in " ".join(labels)
        assert ("camera_collection" in props_drawn) is False
    if state == "done":
        assert progress == [{"factor": 1.0, "type": "BAR", "text": "done: imported"}]
        assert "camera_collection" in props_drawn and "Job abc" in labels


def test_token_is_drawn_from_the_preferences_and_models_for_diffusers_only(zs):
    props = bpy.context.scene.zoomscape
    log = draw(zs)
    drawn = [a[0] for name, a, kw in log if name == "prop"]
    assert "token" in drawn and "use_scene_rgbd" in drawn
    assert not {"text2img_model", "inpaint_model", "depth_model"} & set(drawn)

    zs.properties.set_server_models(props, [{"role": "inpaint", "model_id": "org/inpaint-x", "available": True}])
    props.engine = "diffusers"
    props.depth_model = "/srv/my-depth"
    log = draw(zs)
    drawn = [a[0] for name, a, kw in log if name == "prop"]
    assert {"text2img_model", "inpaint_model", "depth_model"} <= set(drawn)
    labels = [kw.get("text", "") for name, a, kw in log if name == "label"]
    assert "server default: org/inpaint-x" in labels  # blank inpaint → what the server will use
    assert not any("server default" in t and "depth" in t for t in labels)


def test_a_done_job_shows_one_thumbnail_per_level_with_its_prompt(zs, tmp_path):
    scene = bpy.context.scene
    props = scene.zoomscape
    out_dir = str(tmp_path / "results")
    manifest, written = write_level_results(zs, out_dir, n_levels=3)
    assert not [kw for name, a, kw in draw(zs) if name == "template_icon"]  # nothing before the import
    zs.runner.finish(scene, out_dir)
    log = draw(zs)
    icons = [kw for name, a, kw in log if name == "template_icon"]
    assert len(icons) == 3 + 1  # the levels, then the blended stack
    assert all(isinstance(kw["icon_value"], int) and kw["scale"] > 1 for kw in icons)
    labels = [kw.get("text", "") for name, a, kw in log if name == "label"]
    for lv in manifest["levels"]:   # index, the level's zoom (q^i, here 4^i), prompt
        assert f"{lv['index']} · ×{lv['zoom_range'][0]:.3g} · {lv['prompt']}" in labels
    opened = [a[2] for name, a, kw in log
              if name == "operator_property" and a[:2] == ("zoomscape.open_image", "image")]
    levels, stack = zs.thumbnails.job_images(props.job_id)
    assert opened == [im.name for im in levels] + [stack.name]
    # the order on screen is the level order: each thumbnail comes before its label
    first = [i for i, (name, a, kw) in enumerate(log) if name == "template_icon"]
    label_at = [next(i for i, (name, a, kw) in enumerate(log)
                     if name == "label" and kw.get("text") == f"{k} · ×{4 ** k:.3g} · level {k}") for k in range(3)]
    assert first[:3] < label_at and label_at == sorted(label_at)

    # another job's panel does not show these; with the levels toggle off the fade width is disabled
    props.job_id = "other"
    assert not [kw for name, a, kw in draw(zs) if name == "template_icon"]
    props.import_levels = False
    drawn = [a[0] for name, a, kw in draw(zs) if name == "prop"]
    assert {"import_levels", "fade_width"} <= set(drawn)


def test_the_panel_shows_the_servers_refinement_budgets(zs):
    """Connect keeps the health answer's budgets (level_refine_seconds, world_refine_seconds) as
    a line the backend box draws while connected; an older server that does not say draws none."""
    props = bpy.context.scene.zoomscape
    summary = zs.properties.refine_summary
    assert summary({"level_refine_seconds": 20.0, "world_refine_seconds": 60.0}) == \
        "Refine: 20 s per level, 60 s world"
    assert summary({"level_refine_seconds": 0.0, "world_refine_seconds": 0.0}) == "Refine: off"
    assert summary({"level_refine_seconds": 7.5, "world_refine_seconds": 0}) == "Refine: 7.5 s per level, world off"
    assert summary({"engine": "procedural"}) == "" and summary(None) == ""

    props.connected, props.server_info = True, "zoomscape 0.1 · diffusers · cuda"
    props.server_refine = summary({"level_refine_seconds": 20.0, "world_refine_seconds": 60.0})
    labels = [(kw.get("text", ""), kw.get("icon")) for name, a, kw in draw(zs) if name == "label"]
    assert ("Refine: 20 s per level, 60 s world", "TIME") in labels
    props.connected = False
    labels = [kw.get("text", "") for name, a, kw in draw(zs) if name == "label"]
    assert not any(t.startswith("Refine") for t in labels)
    props.connected, props.server_refine = True, ""
    labels = [kw.get("text", "") for name, a, kw in draw(zs) if name == "label"]
    assert not any(t.startswith("Refine") for t in labels)
