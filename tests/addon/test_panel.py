"""The sidebar panel draws every state with real property and operator names (a recording layout
stands in for Blender's UI, which does not exist in background mode)."""
import pytest

import bpy


class RecordingLayout:
    """Accepts UILayout calls, checks the names they use, and records them."""

    def __init__(self, log):
        self.log = log

    def __getattr__(self, name):  # row(), column(), box(), separator(), label(), progress() ...
        def call(*args, **kw):
            self.log.append((name, args, kw))
            return RecordingLayout(self.log)
        return call

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)

    def prop(self, data, name, **kw):
        assert name in data.bl_rna.properties, f"{type(data).__name__} has no property {name!r}"
        if name == "token":  # the token must come from the extension's preferences, never the scene
            assert isinstance(data, bpy.types.AddonPreferences), type(data).__name__
        self.log.append(("prop", (name,), kw))

    def operator(self, idname, **kw):
        module, op = idname.split(".")
        getattr(getattr(bpy.ops, module), op).get_rna_type()  # raises KeyError if unknown
        self.log.append(("operator", (idname,), kw))
        return RecordingLayout(self.log)

    def template_list(self, list_type, list_id, data, collection, active_data, active, **kw):
        assert hasattr(bpy.types, list_type)
        assert collection in data.bl_rna.properties and active in active_data.bl_rna.properties
        self.log.append(("template_list", (collection,), kw))


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
