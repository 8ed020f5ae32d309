"""Zoomscape backend: cameras and prompts in, aligned point clouds and zoom paths out."""

__version__ = "0.1.0"
