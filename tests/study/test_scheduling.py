"""Study workers never idle on a teacher lock while they have runs that need no teacher.

Two workers (threads, each running its own shard through ``run_study`` with a
:class:`TeacherGate`, as ``kdkit study --workers 2`` runs one shard per worker) over a grid whose
runs in order are ``kd`` (needs the teacher) then ``ft`` per seed. The teacher build is a fake
that takes a known time; the executor is a fake that records when each run started and ended.
"""

from __future__ import annotations

import json
import threading
import time

from kdkit.study.grid import load_grid
from kdkit.study.resolve import plan
from kdkit.study.runner import run_study
from kdkit.study.shard import parse_shard
from kdkit.study.teachers import TeacherGate

GRID = """
name: sched
output_dir: {out}
base:
  task: tiny
  training: {{epochs: 1, batch_size: 8, max_length: 64, device: cpu}}
grid:
  teacher: [tiny-teacher]
  student: [{{name: gru, size: 0.6M, vocab_size: 300, hidden_size: 16, label: g}}]
  method: [{{name: kd, temperature: 2}}, ft]
  seed: [0, 1]
"""

BUILD_S = 2.0  # the fake teacher build
RUN_S = 0.2  # a fake run


def test_a_worker_runs_ft_while_another_builds_the_teacher(write_grid, tmp_path, study_plugins):
    grid = load_grid(write_grid(GRID.format(out=tmp_path / "study")))
    runs = plan(grid, study_plugins.registry)
    events: dict[str, tuple[str, float, float]] = {}
    builds: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    def build(run):
        t0 = time.monotonic()
        time.sleep(BUILD_S)
        with lock:
            builds.append((threading.current_thread().name, t0, time.monotonic()))

    def execute(run, resume):
        t0 = time.monotonic()
        time.sleep(RUN_S)
        (run.run_dir / "summary.json").write_text(json.dumps({"fake": True}))
        with lock:
            events[run.run_id] = (threading.current_thread().name, t0, time.monotonic())

    def worker(i):
        gate = TeacherGate(grid.output_dir, build=build, log=lambda _m: None)
        run_study(grid, runs, execute, shard=parse_shard(f"{i}/2"), log=lambda _m: None, gate=gate)

    threads = [threading.Thread(target=worker, args=(i,), name=f"w{i}") for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(events) == 4 and len(builds) == 1  # every run ran; the teacher was built once
    builder, b_start, b_end = builds[0]
    other = "w2" if builder == "w1" else "w1"
    # each worker's first run in order is a kd run; the one that did not get the teacher's
    # lock ran its ft run while the teacher was being built, instead of waiting
    ft = [e for rid, e in events.items() if "__ft__" in rid and e[0] == other]
    assert len(ft) == 1
    _, ft_start, ft_end = ft[0]
    assert b_start <= ft_start and ft_end <= b_end
    # and every kd run started only once the teacher was ready
    kd_starts = [e[1] for rid, e in events.items() if "__kd__" in rid]
    assert len(kd_starts) == 2 and min(kd_starts) >= b_end
    assert (grid.output_dir / next(grid.output_dir.glob(".teacher-*.ready")).name).exists()


def test_gate_with_a_ready_teacher_does_not_build_again(write_grid, tmp_path, study_plugins):
    grid = load_grid(write_grid(GRID.format(out=tmp_path / "study")))
    runs = plan(grid, study_plugins.registry)
    built: list[str] = []
    kd = next(r for r in runs if "__kd__" in r.run_id)
    ft = next(r for r in runs if "__ft__" in r.run_id)
    first = TeacherGate(grid.output_dir, build=lambda r: built.append(r.run_id), log=print)
    assert first(ft, False) and built == []  # no teacher needed
    assert first(kd, False) and built == [kd.run_id]
    second = TeacherGate(grid.output_dir, build=lambda r: built.append(r.run_id), log=print)
    assert second(kd, False) and built == [kd.run_id]  # the marker says ready


def test_a_teacher_whose_pretraining_another_process_runs_is_put_off_not_waited_for(
    write_grid, tmp_path, study_plugins
):
    """The build of a teacher needs the code encoder another process is pre-training (its OS lock
    held): with ``wait=False`` the gate gives up at once (no marker, the teacher's lock released)
    and does not retry for ``retry_s``; once the lock is free the teacher is built."""
    import fcntl

    from kdkit.plugins.models.pretrain import _locked

    grid = load_grid(write_grid(GRID.format(out=tmp_path / "study")))
    runs = plan(grid, study_plugins.registry)
    kd = next(r for r in runs if "__kd__" in r.run_id)
    lock_path = tmp_path / "pretrained" / "lock"
    lock_path.parent.mkdir()
    attempts: list[str] = []

    def build(run):  # what the code teacher does: take the encoder's lock, then train
        attempts.append(run.run_id)
        with _locked(lock_path, print):
            pass

    messages: list[str] = []
    holder = open(lock_path, "a+")  # another process pre-training
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        gate = TeacherGate(grid.output_dir, build=build, log=messages.append, retry_s=3600)
        assert gate(kd, False) is False
        assert gate(kd, False) is False  # within retry_s: not even attempted again
        assert len(attempts) == 1 and not list(grid.output_dir.glob(".teacher-*.ready"))
        assert any("pre-training the code encoder" in m and "meanwhile" in m for m in messages)
        gate.retry_s = 0.0
        assert gate(kd, False) is False and len(attempts) == 2  # retried, still busy
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        holder.close()
    assert gate(kd, False) is True and len(attempts) == 3
    assert list(grid.output_dir.glob(".teacher-*.ready"))


def test_workers_sharing_a_queue_run_every_run_once_and_balance_by_time(
    write_grid, tmp_path, study_plugins
):
    """Two workers walk the whole study with one :class:`RunQueue`: each run executes exactly
    once, and the runs of very different cost are shared by time, not count (a fixed split of
    this grid would give one worker both slow runs)."""
    from kdkit.study.runner import RunQueue

    grid = load_grid(write_grid(GRID.format(out=tmp_path / "study")))
    runs = plan(grid, study_plugins.registry)
    slow = {r.run_id for r in runs if "__kd__" in r.run_id}  # 2 of the 4 runs
    executed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def execute(run, resume):
        time.sleep(1.0 if run.run_id in slow else 0.05)
        (run.run_dir / "summary.json").write_text(json.dumps({"fake": True}))
        with lock:
            executed.append((threading.current_thread().name, run.run_id))

    queue = RunQueue(tmp_path / "study" / ".queue-test")
    outcomes = {}

    def worker(name):
        outcomes[name] = run_study(
            grid, runs, execute, log=lambda _m: None, gate=lambda r, w: True, claim=queue
        )

    threads = [threading.Thread(target=worker, args=(n,), name=n) for n in ("w1", "w2")]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    wall = time.monotonic() - t0
    ids = [rid for _w, rid in executed]
    assert sorted(ids) == sorted(r.run_id for r in runs)  # every run, once
    by_worker = {w: [rid for ww, rid in executed if ww == w] for w in ("w1", "w2")}
    assert all(len(v) >= 1 for v in by_worker.values())
    # the two slow runs ran at the same time, one per worker: about 1 s, not 2
    assert sum(rid in slow for rid in by_worker["w1"]) == 1 and wall < 1.8
    w1 = outcomes["w1"]  # every run: its own, taken by w2, or already complete when reached
    assert sorted(w1.taken + w1.ran + w1.skipped) == sorted(r.run_id for r in runs)
    assert set(w1.ran) == set(by_worker["w1"])


def test_atomic_writes_of_one_file_from_two_threads_never_collide(tmp_path):
    """Two queue workers in one process (as in the test above) write study.json and grid.yaml at
    the same time: the temporary sibling is per thread, so neither ``os.replace`` loses its file."""
    from kdkit.engine.persist import atomic_write_text

    target = tmp_path / "study.json"
    errors: list[BaseException] = []

    def write(tag: str) -> None:
        try:
            for i in range(300):
                atomic_write_text(target, f"{tag} {i}\n")
        except BaseException as exc:  # recorded for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and target.read_text().endswith(" 299\n")
    assert not list(tmp_path.glob(".study.json.tmp*"))  # no sibling left behind
