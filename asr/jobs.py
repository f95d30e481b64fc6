"""Jobs: one stage as N tasks, run here, in a local process pool, or on a Dask cluster.

A heavy stage splits its data directory by speaker into N parts (:func:`split_data`, the
layout of Kaldi's ``utils/split_data.sh``) and runs one task per part through an
:class:`Executor`::

    with make_executor(nj=4, cluster="local") as executor:
        parts = split_data("data/train", executor.nj)
        stats = executor.map(accumulate_part, [(str(p.path), model_dir) for p in parts],
                             desc="accumulate")
    total = stats[0]
    for s in stats[1:]:          # a fixed order: the result does not depend on the engine
        total = total + s

The contract every stage keeps:

* ``fn`` is a module-level function (a spawned or remote worker imports it by name) and
  each task is a small picklable value: paths, settings, small model arrays. Workers read
  audio and features themselves from the paths they are given, so the paths must be
  absolute and, on a cluster, on storage every node mounts; large arrays never travel
  through the scheduler.
* A task returns plain numpy statistics, or writes its outputs atomically
  (``asr.fileio``) and returns something small.
* :meth:`Executor.map` returns results in task order whatever order the tasks finished
  in. Drivers fold them in that order (never as they arrive), so sums of floating-point
  statistics are the same for every ``nj`` split and every engine.
* Every task runs with ``threads`` BLAS/OpenMP/torch threads (1 by default), on every
  engine including the in-process one, so a task computes the same bits wherever it runs.

Engines (``cluster``):

``local``       ``nj == 1``: the tasks run in this process, one after another (no pool:
                tracebacks and debuggers work as usual). ``nj > 1``: a pool of ``nj``
                *spawned* worker processes (``concurrent.futures``), which works on every
                platform. A worker that dies (killed, out of memory) fails the stage with a
                :class:`JobError`; the pool is rebuilt for the next stage.
``dask``        a ``distributed.LocalCluster`` of ``nj`` single-threaded worker processes.
``tcp://H:P``   the workers of an existing Dask scheduler (``dask scheduler``; ``dask
                worker tcp://H:P`` on each node).
``slurm|pbs``   a dask-jobqueue cluster of ``nj`` batch jobs, from the settings' ``[cluster]``
                table (:class:`ClusterConfig`).

On Dask a task whose worker is lost is run again on another worker (the scheduler's
``distributed.scheduler.allowed-failures``, 3 by default); a task that keeps killing its
workers, or a cluster left without workers for ``ClusterConfig.worker_timeout`` seconds,
fails the stage with a :class:`JobError`. The Dask engines need the ``cluster`` extra
(``pip install asr[cluster]``); the local engine needs nothing more.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from tqdm import tqdm

from asr.data.datadir import SPK2UTT, TEXT, UTT2SPK, WAV_SCP, DataDir
from asr.errors import AsrError, DataError, SettingsError
from asr.fileio import atomic_dir, write_text

__all__ = ["ClusterConfig", "ENGINES", "Executor", "JobError", "jobqueue_cluster",
           "make_executor", "split_data", "split_points"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

ENGINES = ("local", "dask", "slurm", "pbs")
"""The engine names ``--cluster`` takes besides a scheduler address ``tcp://HOST:PORT``."""

_SOURCE_FILES = (WAV_SCP, TEXT, UTT2SPK, SPK2UTT)
_CHECKSUM_NAME = "source.sha256"


class JobError(AsrError):
    """A task of a stage failed, or the engine lost the workers it ran on."""

    def __init__(self, path: str | Path | None, message: str, line: int | None = None,
                 hint: str | None = None):
        super().__init__(path, message, line, hint)


# --------------------------------------------------------------------------- splitting data

def split_points(counts: Sequence[int], nj: int) -> list[list[int]]:
    """Group items (speakers) with ``counts`` (utterances) into ``nj`` contiguous parts.

    Kaldi's ``utils/split_scp.pl --utt2spk``: first ``nj`` parts of (nearly) equal numbers
    of items, in order; then the last item of a part moves to the next part, or the first
    to the previous one, while that narrows the difference of their totals, until no move
    does. Returns the item indices of each part; a part may end up empty (the caller
    refuses that).
    """
    n = len(counts)
    parts: list[list[int]] = [[] for _ in range(nj)]
    for i in range(n):
        parts[(i * nj) // n].append(i)
    sizes = [sum(counts[i] for i in part) for part in parts]
    changed = True
    while changed:
        changed = False
        for k in range(nj):
            if k < nj - 1 and parts[k]:
                c = counts[parts[k][-1]]
                if abs((sizes[k + 1] + c) - (sizes[k] - c)) < abs(sizes[k + 1] - sizes[k]):
                    parts[k + 1].insert(0, parts[k].pop())
                    sizes[k] -= c
                    sizes[k + 1] += c
                    changed = True
            if k > 0 and parts[k]:
                c = counts[parts[k][0]]
                if abs((sizes[k] - c) - (sizes[k - 1] + c)) < abs(sizes[k] - sizes[k - 1]):
                    parts[k - 1].append(parts[k].pop(0))
                    sizes[k] -= c
                    sizes[k - 1] += c
                    changed = True
    return parts


def _source_checksum(data_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in _SOURCE_FILES:
        path = data_dir / name
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"(absent)")
        digest.update(b"\0")
    return digest.hexdigest()


def split_data(data_dir: str | Path, nj: int, per_utt: bool = False) -> list[DataDir]:
    """Split a data directory into ``nj`` parts, as Kaldi's ``utils/split_data.sh`` does.

    Parts are written to ``data_dir/split<nj>/<k>`` for ``k = 1..nj`` (Kaldi's layout and
    numbering); each speaker's utterances stay in one part, the parts hold contiguous runs
    of speakers in sorted order, balanced by utterance count (:func:`split_points`).
    With ``per_utt`` (Kaldi's ``--per-utt``, into ``split<nj>utt/<k>``) the parts are
    contiguous runs of utterances instead and a speaker may span parts; use it only where
    nothing is computed per speaker (e.g. base features; see ``Experiment.make_features``).

    The split is cached: it is rebuilt only when the source directory's files changed
    (their SHA-256 is recorded in ``split<nj>/source.sha256``), and it is written
    atomically. ``nj == 1`` returns the data directory itself, unsplit.

    Returns
    -------
    list[DataDir] : the ``nj`` parts in order, each loaded from its folder.

    Raises
    ------
    DataError
        ``nj`` below 1, or more parts than speakers (utterances with ``per_utt``): no part
        may be empty.
    """
    data_dir = Path(data_dir)
    if isinstance(nj, bool) or not isinstance(nj, int) or nj < 1:
        raise DataError(data_dir, f"cannot split into {nj!r} parts; expected a number of "
                        "jobs of at least 1")
    if nj == 1:
        return [DataDir.load(data_dir)]
    split_dir = data_dir / (f"split{nj}utt" if per_utt else f"split{nj}")
    checksum = _source_checksum(data_dir)
    recorded = split_dir / _CHECKSUM_NAME
    if recorded.is_file() and recorded.read_text(encoding="utf-8").strip() == checksum:
        return [DataDir.load(split_dir / str(k)) for k in range(1, nj + 1)]
    data = DataDir.load(data_dir)
    groups = [[u] for u in data.utts] if per_utt else list(data.spk2utt.values())
    what = ("utterance" if per_utt else "speaker") + ("s" if len(groups) != 1 else "")
    if nj > len(groups):
        raise DataError(data_dir, f"cannot split {len(groups)} {what} into {nj} jobs; expected "
                        f"--nj of at most {len(groups)}", hint=None if per_utt else
                        "each job takes whole speakers (Kaldi's split_data.sh)")
    parts = split_points([len(g) for g in groups], nj)
    if any(not part for part in parts):     # only when a few huge speakers dominate
        raise DataError(data_dir, f"splitting {len(groups)} {what} into {nj} balanced jobs "
                        f"leaves a job empty; expected a smaller --nj")
    with atomic_dir(split_dir) as tmp:
        for k, part in enumerate(parts, start=1):
            data.subset([u for i in part for u in groups[i]]).save(tmp / str(k))
        write_text(tmp / _CHECKSUM_NAME, checksum + "\n")
    log.info("split %s into %d parts by %s", data_dir, nj, "utterance" if per_utt else "speaker")
    return [DataDir.load(split_dir / str(k)) for k in range(1, nj + 1)]


# --------------------------------------------------------------------------- settings

@dataclass
class ClusterConfig:
    """The ``[cluster]`` table of a recipe's settings: where a stage's tasks run.

    Attributes
    ----------
    engine : ``"local"``, ``"dask"``, ``"slurm"``, ``"pbs"`` or ``"tcp://HOST:PORT"``; the
        command line's ``--cluster`` overrides it.
    threads : BLAS/OpenMP/torch threads each task uses (the same on every engine, so that
        results do not depend on where a task ran).
    worker_timeout : seconds a Dask stage waits while its cluster has no worker before it
        fails (batch jobs may queue: raise it for a busy SLURM or PBS queue).
    cores, memory, queue, walltime, account, job_extra, python, local_directory,
    job_script_prologue : one dask-jobqueue batch job per job slot (``slurm``/``pbs``
        only), each a Dask worker running one task at a time: the CPUs and memory it
        reserves (``cores`` at least ``threads``; ``"8GB"``), the partition or queue, the wall-clock
        limit (``"02:00:00"``), the account or project, extra ``#SBATCH``/``#PBS`` lines
        (e.g. ``["--gres=gpu:1"]``), the Python on the nodes (default: this one), a node-
        local scratch folder, and shell lines run before the worker starts (e.g.
        ``["source /shared/venv/bin/activate"]``).
    """

    engine: str = "local"
    threads: int = 1
    worker_timeout: float = 600.0
    cores: int = 1
    memory: str = "4GB"
    queue: str = ""
    walltime: str = "01:00:00"
    account: str = ""
    job_extra: list[str] = field(default_factory=list)
    python: str = ""
    local_directory: str = ""
    job_script_prologue: list[str] = field(default_factory=list)

    def __post_init__(self):
        check_engine(self.engine)
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.cores < 1:
            raise ValueError(f"cores must be at least 1, got {self.cores}")
        if not self.worker_timeout > 0:
            raise ValueError(f"worker_timeout must be positive, got {self.worker_timeout}")


def check_engine(engine: str) -> str:
    """``engine`` if it names an engine (see :data:`ENGINES`) or a ``tcp://HOST:PORT``
    scheduler address; otherwise a ValueError saying what is expected."""
    if engine in ENGINES:
        return engine
    if engine.startswith("tcp://"):
        host, _, port = engine[len("tcp://"):].rpartition(":")
        if host and port.isdigit():
            return engine
    raise ValueError(f"unknown cluster {engine!r}; expected one of {', '.join(ENGINES)} or "
                     "a Dask scheduler address tcp://HOST:PORT")


# --------------------------------------------------------------------------- running a task

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _limited_call(fn: Callable[[T], R], task: T, threads: int) -> R:
    """``fn(task)`` with ``threads`` BLAS/OpenMP threads and torch threads.

    Libraries already loaded are limited through threadpoolctl (and torch's own setting);
    those the task loads (e.g. torch, imported by a network's first task on a fresh worker)
    read the environment's ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``, set for the call.
    """
    from threadpoolctl import threadpool_limits

    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in _THREAD_VARIABLES})
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            return fn(task)
    finally:
        if torch is not None and before is not None:
            torch.set_num_threads(before)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _worker_start(threads: int) -> None:
    """Initialiser of a local pool's worker: its thread count, and its end with the driver."""
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PDEATHSIG
        except (OSError, AttributeError):
            pass


def _describe(task: Any, limit: int = 100) -> str:
    text = repr(task)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _task_failed(desc: str, index: int, n: int, task: Any, exc: BaseException) -> JobError:
    detail = " ".join(str(exc).split()) or "(no message)"
    return JobError(None, f"{desc or 'stage'}: task {index + 1} of {n} ({_describe(task)}) "
                    f"failed: {type(exc).__name__}: {detail}")


# --------------------------------------------------------------------------- engines

class Executor:
    """Runs a stage's tasks; engines subclass it (see the module docstring).

    Attributes
    ----------
    nj : the number of tasks a stage should split into (the number of data parts).
    threads : BLAS/OpenMP/torch threads per task.
    progress : show a progress bar over the tasks of each :meth:`map`.
    """

    name = "executor"
    in_process = False      # the tasks run in this process (a task may show its own progress)

    def __init__(self, nj: int = 1, threads: int = 1, progress: bool = True):
        if nj < 1:
            raise ValueError(f"nj must be at least 1, got {nj}")
        self.nj = nj
        self.threads = threads
        self.progress = progress

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], desc: str = "") -> list[R]:
        """``[fn(t) for t in tasks]``, run by this engine; results in task order.

        Raises
        ------
        JobError
            naming the first task (in task order) that raised, with its error; or the
            engine's loss of its workers.
        """
        tasks = list(tasks)
        if not tasks:
            return []
        with tqdm(total=len(tasks), desc=desc or "jobs", unit="job",
                  disable=not self.progress, leave=False) as bar:
            return self._map(fn, tasks, desc, bar)

    def _map(self, fn, tasks, desc, bar) -> list:
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers (a no-op for engines that hold none)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(nj={self.nj}, engine={self.name!r})"


class InProcessExecutor(Executor):
    """The tasks one after another in this process (``--nj 1 --cluster local``)."""

    name = "local"
    in_process = True

    def _map(self, fn, tasks, desc, bar):
        results = []
        for i, task in enumerate(tasks):
            try:
                results.append(_limited_call(fn, task, self.threads))
            except Exception as exc:
                raise _task_failed(desc, i, len(tasks), task, exc) from exc
            bar.update(1)
        return results


class LocalExecutor(Executor):
    """A pool of ``nj`` spawned worker processes on this machine."""

    name = "local"

    def __init__(self, nj: int, threads: int = 1, progress: bool = True):
        super().__init__(nj, threads, progress)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _get_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing

            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.nj, mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_start, initargs=(self.threads,))
        return self._pool

    def _map(self, fn, tasks, desc, bar):
        from concurrent.futures.process import BrokenProcessPool

        pool = self._get_pool()
        futures = [pool.submit(_limited_call, fn, task, self.threads) for task in tasks]
        index = {f: i for i, f in enumerate(futures)}
        try:
            for future in concurrent.futures.as_completed(futures):
                if future.exception() is None:
                    bar.update(1)
                elif not isinstance(future.exception(), BrokenProcessPool):
                    break
        finally:
            for future in futures:
                future.cancel()
        failed = [f for f in futures if f.done() and not f.cancelled() and f.exception()]
        broken = [f for f in failed if isinstance(f.exception(), BrokenProcessPool)]
        if broken:
            self._discard_pool()
            i = index[broken[0]]
            raise JobError(None, f"{desc or 'stage'}: a worker process died while running "
                           f"task {i + 1} of {len(tasks)} ({_describe(tasks[i])}): killed, or "
                           "out of memory?", hint="rerun the recipe: finished stages are "
                           "skipped") from broken[0].exception()
        if failed:
            first = min(failed, key=index.__getitem__)
            i = index[first]
            raise _task_failed(desc, i, len(tasks), tasks[i], first.exception()) \
                from first.exception()
        return [f.result() for f in futures]

    def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor(Executor):
    """Tasks on Dask workers, through a ``distributed.Client``.

    ``client`` is connected to a LocalCluster, a jobqueue cluster or a remote scheduler;
    ``cluster`` (when this executor started it) is closed with it.
    """

    name = "dask"

    def __init__(self, client, nj: int, threads: int = 1, progress: bool = True,
                 cluster=None, worker_timeout: float = 600.0):
        super().__init__(nj, threads, progress)
        self.client = client
        self.cluster = cluster
        self.worker_timeout = worker_timeout

    def _workers(self) -> int:
        try:
            return len(self.client.scheduler_info(n_workers=-1)["workers"])
        except TypeError:          # older distributed: no n_workers argument
            return len(self.client.scheduler_info()["workers"])

    def _map(self, fn, tasks, desc, bar):
        from distributed import wait

        futures = [self.client.submit(_limited_call, fn, task, self.threads, pure=False,
                                      key=f"{desc or 'task'}-{i + 1}-of-{len(tasks)}-"
                                          f"{os.urandom(4).hex()}")
                   for i, task in enumerate(tasks)]
        try:
            pending, idle_since = set(futures), None
            while pending:
                try:
                    done, pending = wait(list(pending), timeout=1.0,
                                         return_when="FIRST_COMPLETED")
                except TimeoutError:    # nothing finished within the second
                    done = set()
                if any(f.status == "error" for f in done):
                    break
                bar.update(len(done))
                if pending and self._workers() == 0:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > self.worker_timeout:
                        raise JobError(None, f"{desc or 'stage'}: the Dask cluster "
                                       f"{self.client.scheduler.address} has had no worker for "
                                       f"{self.worker_timeout:.0f} s; {len(pending)} of "
                                       f"{len(tasks)} tasks did not run",
                                       hint="start workers (dask worker ADDRESS), or raise "
                                            "[cluster] worker_timeout")
                else:
                    idle_since = None
            lost = [i for i, f in enumerate(futures) if f.status == "cancelled"]
            if lost:
                raise JobError(None, f"{desc or 'stage'}: task {lost[0] + 1} of {len(tasks)} "
                               f"({_describe(tasks[lost[0]])}) was cancelled by the Dask "
                               f"scheduler {self.client.scheduler.address} (restarted or "
                               "closed?)", hint="rerun the recipe: finished stages are skipped")
            errors = [(i, f) for i, f in enumerate(futures) if f.status == "error"]
            if errors:
                i, future = errors[0]
                exc = future.exception()
                if type(exc).__name__ == "KilledWorker":
                    raise JobError(None, f"{desc or 'stage'}: task {i + 1} of {len(tasks)} "
                                   f"({_describe(tasks[i])}) was running on workers that died, "
                                   f"too many times: {exc}", hint="rerun the recipe: finished "
                                   "stages are skipped") from exc
                raise _task_failed(desc, i, len(tasks), tasks[i], exc) from exc
            return self.client.gather(futures)
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
            del futures

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None


def _need_dask(what: str):
    try:
        import distributed
    except ImportError:
        raise SettingsError(None, f"--cluster {what} needs Dask", hint="pip install "
                            "'asr[cluster]' (dask[distributed], dask-jobqueue), or use "
                            "--cluster local") from None
    return distributed


def make_executor(nj: int = 1, cluster: str = "local", config: ClusterConfig | None = None,
                  progress: bool = True) -> Executor:
    """The engine that runs ``nj`` tasks at a time on ``cluster`` (see the module docstring).

    ``config`` (the settings' ``[cluster]`` table) supplies threads per task, the Dask
    worker timeout and a batch cluster's job settings; its ``engine`` is ignored here:
    ``cluster`` names the engine (``recipe_executor`` in ``asr.recipe`` resolves it from the
    command line and the settings).
    """
    config = config or ClusterConfig()
    try:
        check_engine(cluster)
    except ValueError as exc:
        raise SettingsError(None, str(exc)) from None
    if isinstance(nj, bool) or not isinstance(nj, int) or nj < 1:
        raise SettingsError(None, f"--nj must be a whole number of at least 1, got {nj!r}")
    threads = config.threads
    if cluster == "local":
        if nj == 1:
            return InProcessExecutor(1, threads, progress)
        return LocalExecutor(nj, threads, progress)
    distributed = _need_dask(cluster)
    if cluster == "dask":
        local = distributed.LocalCluster(n_workers=nj, threads_per_worker=1, processes=True,
                                         dashboard_address=None)
        return DaskExecutor(distributed.Client(local), nj, threads, progress, cluster=local,
                            worker_timeout=config.worker_timeout)
    if cluster.startswith("tcp://"):
        try:
            client = distributed.Client(cluster, timeout=30)
        except OSError as exc:
            raise JobError(None, f"cannot reach the Dask scheduler at {cluster}: {exc}",
                           hint="start one with `dask scheduler --port PORT`") from None
        return DaskExecutor(client, nj, threads, progress, worker_timeout=config.worker_timeout)
    return _jobqueue_executor(cluster, nj, config, progress, distributed)


def jobqueue_cluster(kind: str, config: ClusterConfig):
    """An unscaled dask-jobqueue cluster (``kind``: ``"slurm"`` or ``"pbs"``) whose batch
    jobs each run one single-threaded Dask worker, from the ``[cluster]`` table; its
    ``job_script()`` is the script each job submits."""
    try:
        import dask_jobqueue
    except ImportError:
        raise SettingsError(None, f"--cluster {kind} needs dask-jobqueue",
                            hint="pip install 'asr[cluster]'") from None
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]
    options: dict[str, Any] = dict(cores=config.cores, processes=1, memory=config.memory,
                                   walltime=config.walltime,
                                   job_extra_directives=list(config.job_extra),
                                   job_script_prologue=list(config.job_script_prologue),
                                   python=config.python or sys.executable,
                                   worker_extra_args=["--nthreads", "1"])
    if config.queue:
        options["queue"] = config.queue
    if config.account:
        options["account"] = config.account
    if config.local_directory:
        options["local_directory"] = config.local_directory
    return cls(**options)


def _jobqueue_executor(kind: str, nj: int, config: ClusterConfig, progress: bool,
                       distributed) -> DaskExecutor:
    batch = jobqueue_cluster(kind, config)
    batch.scale(jobs=nj)
    log.info("submitted %d %s jobs for Dask workers; each runs:\n%s", nj, kind.upper(),
             batch.job_script())
    return DaskExecutor(distributed.Client(batch), nj, config.threads, progress, cluster=batch,
                        worker_timeout=config.worker_timeout)


def cluster_config_from(settings: Any) -> ClusterConfig:
    """A settings object's ``cluster`` table, or the defaults when it has none."""
    value = getattr(settings, "cluster", None)
    return value if isinstance(value, ClusterConfig) else ClusterConfig()


def replace_engine(config: ClusterConfig, engine: str | None) -> ClusterConfig:
    """``config`` with the command line's ``--cluster`` (when given) as its engine."""
    return config if engine is None else dataclasses.replace(config, engine=engine)
