"""A job stage run in a worker thread while the job goes on (pipeline.run_job runs the world's
Gaussians beside the zoom levels: both only read the dream's result).

The stage's progress reports are held and handed to the job's progress when the job waits for
it, so the panel sees one stage at a time, in order. The stage stops at its next report or
cancel check when the job ends first (a failure, a cancel), and the job waits for it, so no file
is written after the job is over; an error in the stage is raised where the job waits.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from .errors import JobCancelled

Progress = Callable[[str, int, int, str], None]


class BackgroundStage:
    """Run work(report, should_cancel) → value in a daemon thread, started at once.

    should_cancel: the job's cancel check (None: never); the stage sees it or'ed with stop().
    """

    POLL_S = 0.1

    def __init__(self, name: str, work: Callable[[Progress, Callable[[], bool]], Any],
                 should_cancel: Optional[Callable[[], bool]] = None):
        self.name = name
        self._work, self._job_cancel = work, should_cancel
        self._held: list[tuple[str, int, int, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._value: Any = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name=f"zoomscape-{name}", daemon=True)
        self._thread.start()

    def _cancelled(self) -> bool:
        return self._stop.is_set() or (self._job_cancel is not None and bool(self._job_cancel()))

    def _report(self, stage: str, step: int, total: int, message: str = "") -> None:
        if self._stop.is_set():
            raise JobCancelled(f"{self.name} stopped: the job ended")
        with self._lock:
            self._held.append((stage, step, total, message))

    def _run(self) -> None:
        try:
            self._value = self._work(self._report, self._cancelled)
        except BaseException as exc:  # noqa: BLE001 - handed to the job in wait()
            self._error = exc

    def _flush(self, report: Progress) -> None:
        with self._lock:
            held, self._held = self._held, []
        for args in held:
            report(*args)

    def wait(self, report: Optional[Progress] = None) -> Any:
        """Hand the held reports (and then each new one) to report until the stage ends; → its
        value, or raise its error. When report raises (the job was cancelled), stop the stage,
        wait for it and raise that."""
        report = report or (lambda *a: None)
        try:
            while True:
                alive = self._thread.is_alive()   # read before the flush: nothing is missed
                self._flush(report)
                if not alive:
                    break
                self._thread.join(self.POLL_S)
        except BaseException:
            self.stop()
            raise
        if self._error is not None:
            raise self._error
        return self._value

    def stop(self) -> None:
        """The job ended first: the stage stops at its next report or cancel check; wait for it."""
        self._stop.set()
        self._thread.join()
