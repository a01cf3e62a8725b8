"""``Worker``: claims queued jobs (FIFO) and trains each in its own process, at most ``concurrency`` at once.

One loop, every ``poll_seconds``:

1. heartbeat: the worker's row and every job it holds get ``heartbeat_at = now``;
2. reap: a job process that exited is let go; one that died without recording an outcome (SIGKILL,
   out of memory: the job is still ``running``) is queued again to continue from its last checkpoint,
   up to the job's ``max_retries``, then failed (``job_process_died``);
3. control: a job of its own that was cancelled or paused gets SIGTERM: the pipeline finishes the step,
   saves a checkpoint and stops, and the job keeps its cancelled / paused status;
4. recover: a job held by a worker that is gone (its heartbeat is older than ``stale_seconds``, or,
   on this machine, its process no longer exists) is taken back: queued again if it was running;
5. claim: while below ``concurrency``, the oldest queued job is claimed (atomically) and started:
   ``python -m tuneforge.jobs.run_job JOB_ID`` (its output in ``$TUNEFORGE_HOME/logs/jobs/JOB_ID.log``).

``stop()`` (or SIGINT/SIGTERM to ``tuneforge worker``) stops its job processes gracefully: each saves
a checkpoint and is queued again, so the next worker continues it. A worker killed outright takes its
job processes with it (Linux parent-death signal) and another worker, or itself restarted, recovers
the jobs within ``stale_seconds`` (at once on the same machine).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tuneforge.core.status import RunStatus
from tuneforge.jobs.manager import FineTuningManager
from tuneforge.jobs.run_job import DATABASE_ENV

S = RunStatus
logger = logging.getLogger(__name__)


@dataclass
class _Child:
    job_id: str
    process: subprocess.Popen
    started: float = field(default_factory=time.time)
    signalled: bool = False


class Worker:
    """Runs the store's queued jobs (see the module docstring).

    Args:
        manager: the store to work from (its ``database_url`` and ``home`` are passed to the job processes).
        concurrency: job processes at once (default 1).
        poll_seconds: how often the loop runs.
        stale_seconds: a worker whose heartbeat is older than this is considered dead.
    """

    def __init__(self, manager: FineTuningManager, concurrency: int = 1, poll_seconds: float = 0.5,
                 stale_seconds: float = 10.0, python: str = sys.executable) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.manager, self.store = manager, manager.store
        self.concurrency, self.poll_seconds, self.stale_seconds = concurrency, poll_seconds, stale_seconds
        self.python = python
        self.host = socket.gethostname()
        self.id = f"{self.host}:{os.getpid()}:{secrets.token_hex(3)}"
        self.children: dict[str, _Child] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_heartbeat = 0.0

    # --- running -------------------------------------------------------------------------------
    def run(self, until: Callable[[Worker], bool] | None = None, max_seconds: float | None = None) -> None:
        """Work until ``stop()`` (or ``until(worker)`` is true, or ``max_seconds`` passed), then stop the job processes."""
        deadline = time.monotonic() + max_seconds if max_seconds else None
        try:
            while not self._stopping.is_set():
                self.run_once()
                if until is not None and until(self):
                    break
                if deadline is not None and time.monotonic() > deadline:
                    break
                self._stopping.wait(self.poll_seconds)
        finally:
            self._shutdown()

    def run_once(self) -> None:
        """One pass of the loop: heartbeat, reap, control, recover, claim."""
        self.heartbeat()
        self.reap()
        self.control()
        self.recover()
        if not self._stopping.is_set():
            self.claim()

    def start(self) -> threading.Thread:
        """Run in a background thread (``tuneforge serve``: HTTP and a worker in one process); ``stop()`` ends it."""
        self._thread = threading.Thread(target=self.run, name=f"tuneforge-worker-{self.id}", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, wait: bool = True, timeout: float | None = 120.0) -> None:
        """Stop claiming, stop the job processes gracefully (each saves a checkpoint and is queued again)."""
        self._stopping.set()
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def busy(self) -> bool:
        return bool(self.children)

    # --- the steps -----------------------------------------------------------------------------
    def heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_heartbeat >= min(1.0, self.stale_seconds / 4):
            self.store.heartbeat(self.id, self.host, os.getpid(), self.concurrency)
            self._last_heartbeat = now

    def reap(self) -> None:
        for job_id, child in list(self.children.items()):
            code = child.process.poll()
            if code is None:
                continue
            del self.children[job_id]
            self._ended(job_id, code)

    def control(self) -> None:
        for child in self.children.values():
            if child.signalled:
                continue
            row = self.store.get_job(child.job_id)
            if row is not None and row["status"] in (S.CANCELLED, S.INTERRUPTED):
                self._terminate(child)

    def recover(self) -> None:
        """Take back the jobs of workers that are gone."""
        now = time.time()
        for row in self.store.held_jobs():
            holder = row["worker_id"]
            if holder == self.id:
                if row["id"] not in self.children:  # held by this worker but not running here (a lost child)
                    self._ended(row["id"], None)
                continue
            if not self._holder_gone(row, now):
                continue
            if row["host"] == self.host and row["pid"] and _alive(int(row["pid"])):
                continue  # its orphaned job process is still stopping at a checkpoint; wait for it
            self._take_back(row, holder, reason="the worker running it stopped responding")

    def claim(self) -> None:
        while len(self.children) < self.concurrency:
            row = self.store.claim_next(self.id, self.host)
            if row is None:
                return
            self._spawn(row["id"])

    # --- internals -----------------------------------------------------------------------------
    def _spawn(self, job_id: str) -> None:
        logs = self.manager.home / "logs" / "jobs"
        logs.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env[DATABASE_ENV] = self.manager.database_url
        package_root = str(Path(__file__).resolve().parents[2])  # the directory holding tuneforge/: the child imports this copy
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        command = [self.python, "-m", "tuneforge.jobs.run_job", job_id, "--worker-id", self.id,
                   "--home", str(self.manager.home)]
        with open(logs / f"{job_id}.log", "ab") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.children[job_id] = _Child(job_id, process)
        self.store.update_job(job_id, {"pid": process.pid}, only_if_worker=self.id)
        logger.info("worker %s started job %s (pid %d)", self.id, job_id, process.pid)

    def _terminate(self, child: _Child) -> None:
        try:
            child.process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        child.signalled = True

    def _ended(self, job_id: str, code: int | None) -> None:
        """A job process of this worker exited with ``code``; a job still ``running`` means it died."""
        row = self.store.get_job(job_id)
        if row is None:
            return
        if row["status"] == S.RUNNING and row["worker_id"] == self.id:
            how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0 and -code in signal.valid_signals()
                   else f"exited with status {code}" if code is not None else "was lost")
            self._take_back(row, self.id, reason=f"the job's process {how}")
        else:
            self.store.release(job_id, self.id)

    def _take_back(self, row: dict, holder: str, reason: str) -> None:
        """Let go of a job whose process is gone: queue it to continue from its checkpoint, or fail it after too many tries."""
        values: dict = {}
        if row["status"] == S.RUNNING:
            retries = int(row["retries"] or 0) + 1
            if retries > int(row["max_retries"]):
                message = f"{reason}; it was continued {row['retries']} times already, the limit"
                values = {"status": str(S.FAILED), "finished_at": time.time(), "retries": retries,
                          "error": {"code": "job_process_died", "message": message, "param": None}}
            else:
                values = {"status": str(S.QUEUED), "retries": retries}
                message = (f"{reason}; continuing from its last checkpoint "
                           f"(retry {retries} of {row['max_retries']})")
        if self.store.release(row["id"], holder, values) and values:
            self.manager.add_event(row["id"], message, level="error" if values["status"] == S.FAILED else "warn")

    def _holder_gone(self, row: dict, now: float) -> bool:
        holder = str(row["worker_id"])
        if row["heartbeat_at"] is None or row["heartbeat_at"] < now - self.stale_seconds:
            return True
        host, _, rest = holder.partition(":")
        pid = rest.partition(":")[0]
        return host == self.host and pid.isdigit() and not _alive(int(pid))

    def _shutdown(self) -> None:
        """Stop every job process gracefully and wait for it; the jobs are queued again (or stay cancelled/paused)."""
        for child in self.children.values():
            if not child.signalled:
                self._terminate(child)
        deadline = time.monotonic() + 120
        while self.children and time.monotonic() < deadline:
            self.heartbeat()
            self.reap()
            time.sleep(0.2)
        for child in list(self.children.values()):  # still there after two minutes: stop it outright
            child.process.kill()
            child.process.wait()
        self.reap()
        self.store.remove_worker(self.id)


def _alive(pid: int) -> bool:
    from tuneforge.runs import process_alive

    return process_alive(pid)
