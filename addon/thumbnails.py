"""A done job's zoom level images as bpy images, for the panel's thumbnails.

The results folder holds one ``level_NN.png`` per zoom level and the blended zoom stack, as the
manifest names them (``Manifest.image_files()``: each level's ``image``, then ``zoom.stack_image``).
Each is loaded with ``bpy.data.images.load``, packed into the .blend and its file path cleared, so
the images survive save/reload and moving the .blend with nothing external (``bpy.utils.blend_paths``
stays empty); a fake user keeps them although no material uses them. Missing or unreadable files
are skipped: jobs from before the zoom levels have none, and an import never fails because of a
thumbnail.

Images are tagged with the job (``zoomscape_job``), their kind, level index and prompt, so the panel
finds them by job id (:func:`job_images`) and a re-import replaces them.
"""
from __future__ import annotations

import os

import bpy

from .importers import JOB_KEY
from .wire.manifest import Manifest

LEVEL_KIND, STACK_KIND = "level_image", "zoom_stack"
STACK_INDEX = -1  # the index Manifest.image_files gives the blended stack


def image_name(job_id: str, index: int) -> str:
    """The bpy image name of a job's level index (or of its stack)."""
    what = "stack" if index == STACK_INDEX else f"L{index:02d}"
    return f"Zoomscape {job_id[:8]} {what}"


def remove_job_images(job_id: str) -> int:
    """Delete the level and stack images made earlier for job_id → how many."""
    doomed = [im for im in bpy.data.images
              if im.get(JOB_KEY) == job_id and im.get("zoomscape_kind") in (LEVEL_KIND, STACK_KIND)]
    for im in doomed:
        bpy.data.images.remove(im)
    return len(doomed)


def load_packed(path: str, name: str):
    """The PNG at path as a packed image named name with no file path → the image, or None when
    the file is missing or Blender cannot read it."""
    if not os.path.isfile(path):
        return None
    try:
        image = bpy.data.images.load(path, check_existing=False)
    except RuntimeError:  # "cannot read" / unsupported format
        return None
    try:
        if image.size[0] == 0 or image.size[1] == 0:  # the header did not decode
            raise RuntimeError(f"{path}: no pixels")
        image.pack()
    except RuntimeError:
        bpy.data.images.remove(image)
        return None
    image.filepath = ""  # the packed copy is the image; nothing outside the .blend is needed
    image.name = name
    image.use_fake_user = True  # no material uses it: keep it through save/reload
    return image


def load_job_images(manifest: Manifest, out_dir: str, job_id: str) -> list:
    """Load the level images and the stack of the results in out_dir → [bpy images] (level order,
    stack last); files that are missing or unreadable are skipped. Replaces the job's earlier images."""
    remove_job_images(job_id)
    images = []
    zooms = {lv.index: float(lv.zoom_range[0]) for lv in manifest.levels}  # level i: q^i
    for index, prompt, file in manifest.image_files():
        image = load_packed(os.path.join(out_dir, file), image_name(job_id, index))
        if image is None:
            continue
        image[JOB_KEY] = job_id
        image["zoomscape_kind"] = STACK_KIND if index == STACK_INDEX else LEVEL_KIND
        image["zoomscape_level"] = index
        image["zoomscape_prompt"] = prompt
        if index in zooms:
            image["zoomscape_zoom"] = zooms[index]
        image["zoomscape_file"] = file
        images.append(image)
    return images


def job_images(job_id: str):
    """(level images sorted by level, stack image or None) of job_id; ([], None) without a job."""
    if not job_id:
        return [], None
    mine = [im for im in bpy.data.images if im.get(JOB_KEY) == job_id]
    levels = sorted((im for im in mine if im.get("zoomscape_kind") == LEVEL_KIND),
                    key=lambda im: im["zoomscape_level"])
    stack = next((im for im in mine if im.get("zoomscape_kind") == STACK_KIND), None)
    return levels, stack


def icon_id(image) -> int:
    """The preview icon of image for UILayout.template_icon (0 until Blender has rendered it)."""
    return image.preview_ensure().icon_id


def level_label(image) -> str:
    """'index · ×zoom · prompt' of a level image ('Zoom stack' for the stack): the zoom tells the
    levels painted between two of the user's prompts (zoom.substeps) from those prompts' own;
    images loaded before it was stored have no zoom: 'index · prompt'."""
    index = int(image.get("zoomscape_level", 0))
    prompt = str(image.get("zoomscape_prompt", ""))
    if index == STACK_INDEX:
        return prompt or "Zoom stack"
    zoom = image.get("zoomscape_zoom")
    head = f"{index} · ×{float(zoom):.3g}" if zoom is not None else f"{index}"
    return f"{head} · {prompt}" if prompt else f"Level {index}" + (f" · ×{float(zoom):.3g}" if zoom is not None else "")


def show_in_image_editor(windows, image) -> bool:
    """Show image in the first Image Editor of windows (wm.windows) → False if there is none."""
    for window in windows:
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = image
                area.tag_redraw()
                return True
    return False
