"""Exceptions that cross module boundaries in the backend (stdlib only).

JobCancelled is the one cancellation signal of a job: raised wherever a ``should_cancel()`` poll
turns True (dream.py, zoom.py, gaussians.py, the engines' per-step callbacks) and by the job
store's progress callback once a cancel was requested. The job store and the pipeline catch this
one type; ``zoomscape.dream.JobCancelled`` and ``zoomscape.pipeline.JobCancelled`` are this class.
"""
from __future__ import annotations


class JobCancelled(Exception):
    """The job was cancelled (should_cancel() returned True, or a cancel was requested); no
    results are written."""


__all__ = ["JobCancelled"]
