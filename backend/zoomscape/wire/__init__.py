"""The wire format shared by the backend and the Blender extension: numpy and the stdlib only.

The backend imports it as ``zoomscape.wire``; scripts/build_extension copies this folder into the
extension zip as ``<extension>/wire`` (the extension imports it as ``.wire``), so both sides read
and write the same PLY layouts, manifest and names. Its modules import each other relatively only
and never import bpy, torch or pydantic.

- names     limits, model roles, file names, the zeroconf service type, the format tag
- atomic    atomic writes and the one temp-file naming scheme
- ply       the one PLY header parser; the results' point-cloud layout (PointCloud)
- splats    SH0/sigmoid/logit; activated Gaussians; the Inria 3DGS PLY layout
- cameras   Blender's pixel intrinsics; the zoom-level camera; projection in Blender axes
- manifest  LevelFrame, Level, ZoomInfo, Manifest with from_dict / to_dict
"""
