"""jobs.py: the on-disk store and its one worker (FIFO, progress, cancel, failure, restart).

The first test runs the real pipeline; the queue tests use a gated runner (a stand-in for run_job
that waits on events) so that "running", "queued" and "cancel at the next step" happen exactly when
the test says, without sleeping and hoping.
"""
import json
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers import job_request  # noqa: E402

from zoomscape.jobs import (  # noqa: E402
    INTERRUPTED, STAGE_SHARES, JobFinished, JobNotFound, JobStore, overall_progress, write_json_atomic)


def disk_status(store: JobStore, job_id: str) -> dict:
    return json.loads((store.jobs_dir / job_id / "status.json").read_text())


def wait_state(store, job_id, states, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = store.get(job_id)
        if status["state"] in states:
            return status
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} still {store.get(job_id)['state']}, wanted {states}")


class GatedRunner:
    """Runs jobs one progress step per release(); records the order jobs ran in."""

    def __init__(self, steps=3, fail_with=None):
        self.steps, self.fail_with = steps, fail_with
        self.ran: list[str] = []
        self.started = threading.Event()
        self.gate = threading.Semaphore(0)

    def release(self, n=1):
        for _ in range(n):
            self.gate.release()

    def __call__(self, request, out_dir, progress, should_cancel):
        self.ran.append(request["scene_prompt"])
        self.started.set()
        for step in range(1, self.steps + 1):
            assert self.gate.acquire(timeout=30), "test never released the runner"
            progress("dream", step, self.steps, f"view {step}")
            if self.fail_with is not None:
                raise self.fail_with
        (out_dir / "pointcloud.ply").write_bytes(b"ply\n")
        (out_dir / "manifest.json").write_text(json.dumps({"pointcloud": {"points": 1}}))
        return {"pointcloud": {"points": 1}}


def named(prompt):
    return job_request(2, prompt=prompt)


@pytest.fixture
def store_factory(tmp_path):
    stores = []

    def make(runner=None):
        store = JobStore(tmp_path / "data", runner=runner)
        stores.append(store)
        return store

    yield make
    for s in stores:
        s.stop(timeout=10)


def test_real_pipeline_job_runs_to_done_with_rising_progress(store_factory):
    store = store_factory()
    store.start()
    req = job_request(3, size=64)
    status = store.submit(req)
    job_id = status["id"]
    assert len(job_id) == 32 and uuid.UUID(job_id).version == 4
    assert status["state"] == "queued"
    seen = [status]
    deadline = time.monotonic() + 120
    while seen[-1]["state"] not in ("done", "failed", "cancelled") and time.monotonic() < deadline:
        seen.append(store.get(job_id))
        time.sleep(0.005)
    final = seen[-1]
    assert final["state"] == "done", final
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert {s["stage"] for s in seen} & {"dream"}, "the dream stage never reported progress"
    assert disk_status(store, job_id) == {k: v for k, v in final.items() if k != "queue_position"}
    assert "queue_position" not in disk_status(store, job_id)  # computed on read, never stored
    assert json.loads((store.jobs_dir / job_id / "request.json").read_text()) == req
    names = {f["name"] for f in store.files(job_id)}
    assert {"pointcloud.ply", "manifest.json"} <= names
    manifest = json.loads(store.file_path(job_id, "manifest.json").read_text())
    assert manifest["pointcloud"]["points"] > 0
    assert not list(store.jobs_dir.rglob("*.tmp")), "temp files left behind"


def test_fifo_one_at_a_time_with_queue_positions(store_factory):
    runner = GatedRunner(steps=1)
    store = store_factory(runner)
    store.start()
    a = store.submit(named("A"))["id"]
    assert runner.started.wait(10)
    b, c = store.submit(named("B"))["id"], store.submit(named("C"))["id"]
    assert [store.get(j)["queue_position"] for j in (a, b, c)] == [0, 1, 2]
    assert [store.get(j)["state"] for j in (a, b, c)] == ["running", "queued", "queued"]
    assert "queue_position" not in disk_status(store, c)  # positions are computed on read
    runner.release()
    wait_state(store, b, {"running"})
    assert store.get(c)["queue_position"] == 1 and "queue_position" not in disk_status(store, c)
    runner.release(2)
    for j in (a, b, c):
        assert wait_state(store, j, {"done", "failed"})["state"] == "done"
    assert runner.ran == ["A", "B", "C"]
    assert [s["id"] for s in store.list()] == [c, b, a]  # newest first


def test_progress_is_reported_into_status_json(store_factory):
    runner = GatedRunner(steps=4)
    store = store_factory(runner)
    store.start()
    j = store.submit(named("P"))["id"]
    runner.release()
    deadline = time.monotonic() + 10
    while store.get(j)["step"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    on_disk = disk_status(store, j)
    assert (on_disk["state"], on_disk["stage"], on_disk["step"], on_disk["total"]) == ("running", "dream", 1, 4)
    assert on_disk["progress"] == pytest.approx(dict(STAGE_SHARES)["dream"] / 4)
    assert on_disk["message"] == "view 1"
    runner.release(3)
    wait_state(store, j, {"done"})


def test_overall_progress_never_goes_back_across_stages():
    p, seen = 0.0, []
    run = [("dream", 1, 3), ("dream", 2, 3), ("dream", 3, 3), ("zoom", 0, 1), ("zoom", 1, 2), ("zoom", 2, 2),
           ("lift", 1, 2), ("lift", 2, 2), ("write", 1, 2), ("write", 2, 2), ("unknown-stage", 1, 5),
           ("dream", 1, 3)]  # a late report of an earlier stage does not move the bar back
    for stage, step, total in run:
        p = overall_progress(stage, step, total, p)
        seen.append(p)
    assert seen == sorted(seen)
    shares = dict(STAGE_SHARES)
    assert seen[0] == pytest.approx(shares["dream"] / 3) and seen[2] == pytest.approx(shares["dream"])
    assert seen[5] == pytest.approx(shares["dream"] + shares["zoom"])
    assert seen[9] == pytest.approx(1.0) and sum(shares.values()) == pytest.approx(1.0)


def test_cancel_queued_at_once_and_running_at_next_step(store_factory):
    runner = GatedRunner(steps=5)
    store = store_factory(runner)
    store.start()
    a = store.submit(named("A"))["id"]
    assert runner.started.wait(10)
    b = store.submit(named("B"))["id"]
    cancelled = store.cancel(b)
    assert cancelled["state"] == "cancelled" and cancelled["queue_position"] == 0
    assert disk_status(store, b)["state"] == "cancelled"
    runner.release()
    wait_state(store, a, {"running"})
    answer = store.cancel(a)
    assert answer["state"] == "running" and "cancel" in answer["message"]
    runner.release()  # the next progress step raises inside the job
    final = wait_state(store, a, {"cancelled", "done", "failed"})
    assert final["state"] == "cancelled"
    assert store.files(a) == []
    assert runner.ran == ["A"], "a cancelled queued job must never run"
    with pytest.raises(JobFinished):
        store.cancel(a)
    with pytest.raises(JobNotFound):
        store.cancel("0" * 32)


def test_failed_job_keeps_a_clear_error_and_the_worker_goes_on(store_factory):
    runner = GatedRunner(steps=1, fail_with=ValueError("overlap too small in view 2"))
    store = store_factory(runner)
    store.start()
    bad = store.submit(named("bad"))["id"]
    runner.release()
    failed = wait_state(store, bad, {"failed", "done"})
    assert failed["state"] == "failed"
    assert failed["error"] == "ValueError: overlap too small in view 2"
    assert "Traceback" in (store.jobs_dir / bad / "error.txt").read_text()
    runner.fail_with = None
    good = store.submit(named("good"))["id"]
    runner.release()
    assert wait_state(store, good, {"done", "failed"})["state"] == "done"


def test_restart_requeues_queued_and_fails_interrupted(tmp_path):
    data = tmp_path / "data"
    first = JobStore(data, runner=GatedRunner())
    done_runner = GatedRunner(steps=1)
    a, b, c = (first.submit(named(p))["id"] for p in "ABC")
    # simulate a crash while A ran: its status.json says running, B and C are queued
    status = disk_status(first, a)
    status.update(state="running", stage="dream", step=1, total=3)
    write_json_atomic(first.jobs_dir / a / "status.json", status)

    second = JobStore(data, runner=done_runner)
    assert second.get(a)["state"] == "failed" and second.get(a)["error"] == INTERRUPTED
    assert disk_status(second, a)["error"] == INTERRUPTED
    assert [second.get(j)["queue_position"] for j in (b, c)] == [1, 2]
    second.start()
    try:
        done_runner.release(2)
        for j in (b, c):
            assert wait_state(second, j, {"done", "failed"})["state"] == "done"
        assert done_runner.ran == ["B", "C"]
    finally:
        second.stop()
    third = JobStore(data)
    assert [third.get(j)["state"] for j in (a, b, c)] == ["failed", "done", "done"]


def test_stop_interrupts_the_running_job(store_factory):
    runner = GatedRunner(steps=3)
    store = store_factory(runner)
    store.start()
    j = store.submit(named("S"))["id"]
    assert runner.started.wait(10)
    stopper = threading.Thread(target=store.stop)
    stopper.start()
    deadline = time.monotonic() + 10
    while not store._stopping and time.monotonic() < deadline:
        time.sleep(0.005)
    runner.release()  # the job reaches its next step while the store stops
    stopper.join(10)
    assert store.get(j)["state"] == "failed" and store.get(j)["error"] == INTERRUPTED


def test_files_only_plain_names_of_that_job(store_factory, tmp_path):
    runner = GatedRunner(steps=1)
    store = store_factory(runner)
    store.start()
    j = store.submit(named("F"))["id"]
    assert store.files(j) == []  # nothing until done
    runner.release()
    wait_state(store, j, {"done"})
    (tmp_path / "secret.txt").write_text("no")
    for name in ("../request.json", "..", "", ".hidden", "../../secret.txt", "/etc/passwd", "nope.ply"):
        with pytest.raises(JobNotFound):
            store.file_path(j, name)
    assert store.file_path(j, "manifest.json").parent == store.jobs_dir / j / "results"
    with pytest.raises(JobNotFound):
        store.files("f" * 32)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "status.json"
    write_json_atomic(path, {"state": "queued"})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"progress": float("nan")})  # NaN is not JSON
    assert json.loads(path.read_text()) == {"state": "queued"}

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("zoomscape.jobs.os.fsync", disk_full)  # fails after the temp file was written
    with pytest.raises(OSError):
        write_json_atomic(path, {"state": "running", "pad": "x" * 10000})
    assert json.loads(path.read_text()) == {"state": "queued"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


# ------------------------------------------------------------------ restart, temp files, symlinks, queue


def crashed_while_running(data: Path, manifest_text=None) -> str:
    """A job whose status.json says running (the server was killed), with results/manifest.json as given."""
    store = JobStore(data, runner=GatedRunner())
    job_id = store.submit(named("killed"))["id"]
    status = disk_status(store, job_id)
    status.update(state="running", stage="write", step=1, total=2, progress=0.97, message="writing results")
    write_json_atomic(store.jobs_dir / job_id / "status.json", status)
    results = store.jobs_dir / job_id / "results"
    (results / "pointcloud.ply").write_bytes(b"ply\n")
    if manifest_text is not None:
        (results / "manifest.json").write_text(manifest_text)
    return job_id


def test_restart_after_a_kill_once_the_manifest_was_written_is_done(tmp_path):
    from zoomscape.wire.manifest import Manifest

    complete = Manifest(job_id=None, pointcloud_file="pointcloud.ply", points=1234).to_dict()
    job_id = crashed_while_running(tmp_path / "data", json.dumps(complete))
    store = JobStore(tmp_path / "data")
    status = store.get(job_id)
    assert (status["state"], status["stage"], status["progress"], status["error"]) == ("done", "done", 1.0, None)
    assert status["message"] == "done: 1234 points"
    assert disk_status(store, job_id)["state"] == "done"
    assert {f["name"] for f in store.files(job_id)} == {"pointcloud.ply", "manifest.json"}


@pytest.mark.parametrize("manifest", [None, '{"format": "zoomscape-res', "[1, 2]", "",
                                      '{"pointcloud": {"points": 1234}}'],
                         ids=["no manifest", "cut short", "not an object", "empty", "not a results manifest"])
def test_restart_with_an_incomplete_manifest_is_failed(tmp_path, manifest):
    job_id = crashed_while_running(tmp_path / "data", manifest)
    store = JobStore(tmp_path / "data")
    assert (store.get(job_id)["state"], store.get(job_id)["error"]) == ("failed", INTERRUPTED)
    assert store.files(job_id) == []


def test_restart_removes_the_temp_files_of_interrupted_writes(tmp_path):
    from zoomscape.wire.atomic import temp_path

    data = tmp_path / "data"
    store = JobStore(data, runner=GatedRunner())
    ids = [store.submit(named(p))["id"] for p in "AB"]
    leftovers, kept = [], []
    for job_id in ids:
        d = store.jobs_dir / job_id
        leftovers += [temp_path(d / "status.json"), temp_path(d / "results" / "pointcloud.ply"),
                      d / "results" / "level_03.ply.tmp", d / "results" / ".pointcloud.ply.0badcafe.tmp"]
        kept += [d / "results" / "level_00.ply", d / "results" / "notes.tmp.txt", d / "request.json"]
    for p in leftovers + kept[0::3] + kept[1::3]:
        p.write_bytes(b"x" * 100)
    (store.jobs_dir / ids[0] / "results" / "keep.ply.tmp.d").mkdir()  # folders are left alone
    assert all(p.exists() for p in leftovers)

    second = JobStore(data)
    assert [p for p in leftovers if p.exists()] == []
    assert all(p.exists() for p in kept)
    assert (store.jobs_dir / ids[0] / "results" / "keep.ply.tmp.d").is_dir()
    assert [second.get(j)["state"] for j in ids] == ["queued", "queued"]


def test_starting_a_job_does_not_rewrite_the_queued_jobs_statuses(store_factory, monkeypatch):
    import zoomscape.jobs as jobs_module

    runner = GatedRunner(steps=1)
    store = store_factory(runner)
    ids = [store.submit(named(f"J{i}"))["id"] for i in range(31)]
    written = []
    real_write = jobs_module.write_json_atomic

    def recording_write(path, obj):
        written.append(Path(path).parent.name)
        real_write(path, obj)

    monkeypatch.setattr(jobs_module, "write_json_atomic", recording_write)
    store.start()
    assert runner.started.wait(10)
    wait_state(store, ids[0], {"running"})
    assert written == [ids[0]], "starting a job rewrote other jobs' status.json"
    assert [store.get(j)["queue_position"] for j in ids] == list(range(31))
    assert [s["queue_position"] for s in sorted(store.list(), key=lambda s: s["created"])] == list(range(31))
    store.cancel(ids[0])
    runner.release()
    wait_state(store, ids[1], {"running"})
    assert store.get(ids[30])["queue_position"] == 29
    for j in reversed(ids[1:]):  # let the store stop at once
        store.cancel(j)
    runner.release()
    wait_state(store, ids[1], {"cancelled"})


def test_symlinks_in_results_are_neither_listed_nor_served(store_factory, tmp_path):
    runner = GatedRunner(steps=1)
    store = store_factory(runner)
    store.start()
    j = store.submit(named("L"))["id"]
    runner.release()
    wait_state(store, j, {"done"})
    results = store.jobs_dir / j / "results"
    secret = tmp_path / "secret.txt"
    secret.write_text("no")
    (results / "passwd.txt").symlink_to("/etc/passwd")
    (results / "secret.json").symlink_to(secret)
    (results / "request.json").symlink_to(store.jobs_dir / j / "request.json")  # inside, but a link
    (results / "dangling.ply").symlink_to(tmp_path / "nothing-here")
    (results / "folder.ply").mkdir()
    assert {f["name"] for f in store.files(j)} == {"pointcloud.ply", "manifest.json"}
    for name in ("passwd.txt", "secret.json", "request.json", "dangling.ply", "folder.ply"):
        with pytest.raises(JobNotFound):
            store.file_path(j, name)

    # the results folder itself replaced by a link to somewhere else: nothing is served
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "manifest.json").write_text("{}")
    results.rename(tmp_path / "moved-results")
    results.symlink_to(elsewhere, target_is_directory=True)
    assert store.files(j) == []
    with pytest.raises(JobNotFound):
        store.file_path(j, "manifest.json")


def test_the_worker_warms_the_runner_up_before_its_first_job(store_factory):
    """The default runner imports the pipeline (torch, ~3 s) when the worker starts, not in the
    user's first job; a runner's failing warm-up only logs, and jobs still run."""
    from zoomscape.jobs import EnginePool, default_runner

    assert callable(default_runner(EnginePool()).warm_up)
    order = []
    runner = GatedRunner(steps=1)
    runner.warm_up = lambda: order.append(("warm", len(runner.ran)))   # jobs run so far
    store = store_factory(runner)
    store.start()
    job = store.submit(named("after the warm-up"))
    runner.release()
    wait_state(store, job["id"], {"done"})
    assert order == [("warm", 0)] and runner.ran == ["after the warm-up"]

    failing = GatedRunner(steps=1)
    failing.warm_up = lambda: 1 / 0
    store2 = JobStore(store.data_dir.parent / "data2", runner=failing)
    try:
        store2.start()
        job = store2.submit(named("despite a failed warm-up"))
        failing.release()
        assert wait_state(store2, job["id"], {"done"})["state"] == "done"
    finally:
        store2.stop(timeout=10)
