"""background.BackgroundStage: a job stage in a worker thread (the world's Gaussians beside the
zoom levels), its progress held and handed on in order, its errors and the job's cancel passed
between the two threads."""
import threading
import time

import pytest

from zoomscape.background import BackgroundStage
from zoomscape.errors import JobCancelled


def test_the_value_comes_back_and_the_reports_are_held_until_the_job_waits():
    ran_in, go = [], threading.Event()

    def work(report, cancel):
        ran_in.append(threading.current_thread().name)
        for k in range(3):
            report("world", k, 2, f"step {k}")
        go.wait(5)
        report("world", 3, 3, "last")
        return 42

    seen = []
    stage = BackgroundStage("world", work)
    time.sleep(0.2)
    assert seen == []                            # nothing reaches the job before it waits
    go.set()
    assert stage.wait(lambda *a: seen.append(a)) == 42
    assert ran_in == ["zoomscape-world"]
    assert seen == [("world", 0, 2, "step 0"), ("world", 1, 2, "step 1"), ("world", 2, 2, "step 2"),
                    ("world", 3, 3, "last")]


def test_an_error_in_the_stage_is_raised_where_the_job_waits():
    def work(report, cancel):
        report("world", 0, 1, "")
        raise ValueError("result: needs a camera per view")

    stage = BackgroundStage("world", work)
    seen = []
    with pytest.raises(ValueError, match="needs a camera per view"):
        stage.wait(lambda *a: seen.append(a))
    assert seen == [("world", 0, 1, "")]         # what it reported before failing still counts


def test_stop_ends_the_stage_at_its_next_cancel_check_or_report():
    checks, reported = threading.Event(), []

    def work(report, cancel):
        while not cancel():
            checks.set()
            time.sleep(0.01)
        report("world", 1, 1, "after the stop")   # raises: the job is over
        reported.append("not reached")

    stage = BackgroundStage("world", work)
    assert checks.wait(5)
    t = time.perf_counter()
    stage.stop()
    assert time.perf_counter() - t < 2 and not stage._thread.is_alive()
    assert reported == []
    with pytest.raises(JobCancelled, match="world stopped"):
        stage.wait()


def test_the_jobs_cancel_reaches_the_stage():
    flag = threading.Event()

    def work(report, cancel):
        while not cancel():
            time.sleep(0.01)
        return "cancelled"

    stage = BackgroundStage("world", work, should_cancel=flag.is_set)
    flag.set()
    assert stage.wait() == "cancelled"


def test_a_cancel_raised_by_the_jobs_progress_stops_the_stage():
    stop_seen = threading.Event()

    def work(report, cancel):
        report("world", 0, 1, "")
        while not cancel():
            time.sleep(0.01)
        stop_seen.set()

    def progress(*a):
        raise JobCancelled("job cancelled")

    stage = BackgroundStage("world", work)
    with pytest.raises(JobCancelled, match="job cancelled"):
        stage.wait(progress)
    assert stop_seen.is_set() and not stage._thread.is_alive()
