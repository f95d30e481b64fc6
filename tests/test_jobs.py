"""Jobs: split_data as Kaldi splits, one Executor seam over every engine, and a recipe whose
results do not depend on --nj or --cluster (a Dask LocalCluster, a scheduler with workers
in separate processes, one of them killed in the middle of a stage)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from asr.data import DataDir
from asr.errors import DataError, SettingsError
from asr.jobs import (ClusterConfig, JobError, jobqueue_cluster, make_executor, split_data,
                      split_points)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "ASR_QUIET": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"),
                                      os.environ.get("PYTHONPATH", "")])}


def _echo_after(task: tuple[int, float]) -> int:
    """A task: wait, then return the value (later tasks finish first)."""
    value, seconds = task
    time.sleep(seconds)
    return value * value


def _fail_on_three(value: int) -> int:
    if value == 3:
        raise ValueError("three is not allowed")
    return value


def _threads(_: int) -> int:
    from threadpoolctl import threadpool_info
    return max(info["num_threads"] for info in threadpool_info())


def _die(_: int) -> None:
    os._exit(3)      # the worker process ends without a word, as when killed


# ----------------------------------------------------------------------------- split_data

def _data_dir(root: Path, speakers: dict[str, int]) -> Path:
    """A data directory with ``speakers`` (id -> number of utterances) and empty audio."""
    wavs, text, utt2spk = {}, {}, {}
    (root / "wav").mkdir(parents=True, exist_ok=True)
    for spk, count in speakers.items():
        for i in range(count):
            utt = f"{spk}-u{i:02d}"
            wavs[utt] = root / "wav" / f"{utt}.wav"
            wavs[utt].touch()
            text[utt], utt2spk[utt] = ["YES"], spk
    DataDir(wavs=wavs, text=text, utt2spk=utt2spk).save(root / "train")
    return root / "train"


def test_split_points_balances_contiguous_speakers_as_split_scp_does():
    # equal counts: equal numbers of speakers, in order
    assert split_points([1] * 6, 3) == [[0, 1], [2, 3], [4, 5]]
    # one big speaker: its neighbours move away from it until the totals are closest
    assert split_points([10, 1, 1, 1, 1], 2) == [[0], [1, 2, 3, 4]]
    assert split_points([1, 1, 1, 1, 10], 2) == [[0, 1, 2, 3], [4]]
    # a local optimum, as Kaldi's: 12 4 4 -> 10 6 4, where no single move narrows a gap
    assert split_points([5, 5, 2, 2, 2, 2, 2], 3) == [[0, 1], [2, 3, 4], [5, 6]]


def test_split_data_keeps_speakers_whole_balanced_and_in_order(tmp_path):
    source = _data_dir(tmp_path, {"a": 4, "b": 1, "c": 2, "d": 3, "e": 2, "f": 4})
    parts = split_data(source, 3)
    assert [p.path for p in parts] == [source / "split3" / str(k) for k in (1, 2, 3)]
    speakers = [sorted(set(p.utt2spk.values())) for p in parts]
    assert speakers == [["a", "b"], ["c", "d"], ["e", "f"]]
    assert [len(p) for p in parts] == [5, 5, 6]
    whole = DataDir.load(source)
    assert DataDir.combine(parts) == whole                   # every utterance, once
    for part in parts:                                       # Kaldi's four files, valid
        assert sorted(f.name for f in part.path.iterdir()) == ["spk2utt", "text", "utt2spk",
                                                               "wav.scp"]
        assert all(whole.text[u] == part.text[u] for u in part.utts)
    by_utt = split_data(source, 4, per_utt=True)
    assert [len(p) for p in by_utt] == [4, 4, 4, 4]
    assert by_utt[0].path == source / "split4utt" / "1"
    assert sum((p.utts for p in by_utt), []) == whole.utts


def test_split_data_is_cached_until_the_source_changes(tmp_path):
    source = _data_dir(tmp_path, {"a": 2, "b": 2, "c": 2})
    split_data(source, 2)
    wav_scp = source / "split2" / "1" / "wav.scp"
    written = wav_scp.stat().st_mtime_ns
    time.sleep(0.01)
    assert [p.utts for p in split_data(source, 2)] == [["a-u00", "a-u01", "b-u00", "b-u01"],
                                                       ["c-u00", "c-u01"]]
    assert wav_scp.stat().st_mtime_ns == written              # read, not rewritten
    data = DataDir.load(source)
    text = source / "text"                                    # a transcript changes in place
    text.write_text(text.read_text().replace("c-u01 YES", "c-u01 NO"))
    parts = split_data(source, 2)
    assert parts[1].text["c-u01"] == ["NO"]
    data.subset(data.utts[:4]).save(source)                   # rewritten: the cache goes too
    assert not (source / "split2").exists()
    assert [len(p) for p in split_data(source, 2)] == [2, 2]


def test_split_data_refuses_bad_numbers_of_jobs(tmp_path):
    source = _data_dir(tmp_path, {"a": 3, "b": 3})
    assert split_data(source, 1)[0].path == source            # one job: the set itself
    with pytest.raises(DataError, match=r"cannot split 2 speakers into 3 jobs; expected --nj "
                                        r"of at most 2"):
        split_data(source, 3)
    with pytest.raises(DataError, match="at least 1"):
        split_data(source, 0)
    with pytest.raises(DataError, match="cannot split 6 utterances into 7 jobs"):
        split_data(source, 7, per_utt=True)
    assert not (source / "split3").exists()


# ----------------------------------------------------------------------------- executors

@pytest.fixture(scope="module", params=[(1, "local"), (2, "local"), (2, "dask")],
                ids=["inprocess", "pool", "dask"])
def executor(request):
    with make_executor(*request.param, progress=False) as ex:
        yield ex


def test_results_come_in_task_order(executor):
    tasks = [(v, 0.1 * (3 - v)) for v in range(4)]           # the last one finishes first
    assert executor.map(_echo_after, tasks, desc="echo") == [0, 1, 4, 9]
    assert executor.map(_echo_after, [], desc="none") == []


def test_a_failing_task_is_named_with_its_error(executor):
    with pytest.raises(JobError) as caught:
        executor.map(_fail_on_three, [1, 2, 3, 4], desc="check values")
    assert str(caught.value) == ("check values: task 3 of 4 (3) failed: ValueError: three is "
                                 "not allowed")
    assert executor.map(_fail_on_three, [5, 6]) == [5, 6]      # the engine still works


def test_every_task_runs_with_one_blas_thread(executor):
    assert executor.map(_threads, [0, 1]) == [1, 1]


def test_a_dead_local_worker_fails_the_stage_and_the_pool_recovers():
    with make_executor(2, "local", progress=False) as ex:
        with pytest.raises(JobError, match=r"^align: a worker process died while running task "
                                           r"\d of 2 .*killed, or out of memory\?; rerun"):
            ex.map(_die, [0, 1], desc="align")
        assert ex.map(_echo_after, [(2, 0), (3, 0)]) == [4, 9]


def test_engines_and_settings_are_checked():
    with pytest.raises(SettingsError, match="unknown cluster 'sge'; expected one of local, "
                                            "dask, slurm, pbs or a Dask scheduler address"):
        make_executor(2, "sge")
    with pytest.raises(SettingsError, match="--nj must be a whole number of at least 1"):
        make_executor(0, "local")
    with pytest.raises(ValueError, match="unknown cluster"):
        ClusterConfig(engine="tcp://nohost")
    from asr.recipe import recipe_arguments
    parser = recipe_arguments("x", Path("settings.toml"))
    args = parser.parse_args([])
    assert (args.nj, args.cluster) == (1, None)
    assert parser.parse_args(["--cluster", "tcp://10.0.0.1:8786"]).cluster == "tcp://10.0.0.1:8786"
    for bad in (["--nj", "0"], ["--nj", "two"], ["--cluster", "spark"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_the_cluster_table_chooses_the_engine_unless_the_command_line_does(tmp_path):
    from asr.jobs import DaskExecutor, InProcessExecutor, LocalExecutor
    from asr.recipe import recipe_arguments, recipe_executor, resolve_settings
    from conftest import load_recipe

    settings_file = tmp_path / "settings.toml"
    settings_file.write_text((REPO / "recipes/yesno/settings.toml").read_text()
                             + '\n[cluster]\nengine = "dask"\nthreads = 1\n')
    parser = recipe_arguments("yesno", settings_file)
    settings_of = load_recipe("yesno").Settings
    args = parser.parse_args(["--nj", "2", "--cluster", "local"])
    with recipe_executor(args, resolve_settings(args, settings_of)) as ex:
        assert isinstance(ex, LocalExecutor) and ex.nj == 2
    args = parser.parse_args([])
    settings = resolve_settings(args, settings_of)
    assert settings.cluster.engine == "dask"
    with recipe_executor(args, settings) as ex:
        assert isinstance(ex, DaskExecutor) and ex.nj == 1
    with recipe_executor(parser.parse_args(["--cluster", "local"]), settings) as ex:
        assert isinstance(ex, InProcessExecutor)
    settings_file.write_text('[cluster]\nengine = "slurm"\nwalltime = 3\n')
    with pytest.raises(SettingsError, match=r"settings.toml:3: setting \[cluster\] 'walltime' "
                                            "must be of type str"):
        resolve_settings(parser.parse_args([]), settings_of)


def test_a_slurm_table_becomes_the_batch_script_of_each_worker():
    config = ClusterConfig(engine="slurm", cores=2, memory="8GB", queue="cpu",
                           walltime="02:00:00", job_extra=["--gres=gpu:1"],
                           job_script_prologue=["source /shared/venv/bin/activate"])
    batch = jobqueue_cluster("slurm", config)
    try:
        script = batch.job_script()
    finally:
        batch.close()
    for line in ("#SBATCH -p cpu", "#SBATCH --cpus-per-task=2", "#SBATCH -t 02:00:00",
                 "#SBATCH --gres=gpu:1", "source /shared/venv/bin/activate"):
        assert line in script.splitlines()
    assert script.rstrip().endswith("--nthreads 1")            # one task at a time per job


def test_merged_archives_are_the_bytes_of_one_archive(tmp_path):
    from asr.features import FeatureConfig, merge_archives, read_archive, write_archive
    rng = np.random.default_rng(0)
    feats = {f"u{i}": rng.standard_normal((5 + i, 3)).astype(np.float32) for i in range(5)}
    cfg = FeatureConfig()
    write_archive(tmp_path / "whole", feats, cfg)
    write_archive(tmp_path / "p1", {u: feats[u] for u in ("u0", "u1", "u3")}, cfg)
    write_archive(tmp_path / "p2", {u: feats[u] for u in ("u2", "u4")}, cfg)
    merge_archives([tmp_path / "p1", tmp_path / "p2"], tmp_path / "merged", cfg)
    for name in ("feats.npy", "feats.index", "config.json"):
        assert (tmp_path / "merged" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert list(read_archive(tmp_path / "merged", utts=["u4", "u1"])) == ["u1", "u4"]


# ----------------------------------------------------------------------------- the recipe

# yesno, reduced (fewer EM iterations): the outputs, not the accuracy, are compared
REDUCED = ["--set", "mono.num_iters=8", "--set", "mono.mixup_iters=6", "--set", "dnn.epochs=3"]
MODELS = ("mono", "dnn")


class YesnoRun:
    """One output root of the yesno recipe, run as a user runs it (a separate process)."""

    def __init__(self, root: Path, corpus: Path, *extra: str):
        self.root = root
        self.args = [sys.executable, str(REPO / "recipes/yesno/run.py"), "--corpus", str(corpus),
                     "--exp", str(root / "exp"), "--data", str(root / "data"), "--results",
                     str(root / "results"), "--no-progress", *REDUCED, *extra]

    def start(self, *extra: str) -> subprocess.Popen:
        self.console = open(self.root / "console.txt", "ab")
        return subprocess.Popen([*self.args, *extra], cwd=REPO, env=ENV, stdout=self.console,
                                stderr=subprocess.STDOUT)

    def finish(self, proc: subprocess.Popen) -> None:
        code = proc.wait(300)
        self.console.close()
        assert code == 0, (self.root / "console.txt").read_text()[-3000:]

    def run(self, *extra: str) -> "YesnoRun":
        self.root.mkdir(parents=True, exist_ok=True)
        self.finish(self.start(*extra))
        return self

    def scores(self) -> str:
        """results.json's scores (WER entries, without the run they point to), byte for
        byte, with this run's output root masked in the decode paths they name."""
        results = json.loads((self.root / "results/yesno/results.json").read_text())
        systems = {name: row["test_sets"] for name, row in results["systems"].items()}
        return json.dumps(systems, indent=1, sort_keys=True).replace(str(self.root), "<root>")

    def run_records(self) -> list[dict]:
        """The runs results.json records, but for what legitimately differs: the date and
        the command line (which holds --nj, --cluster and the output folders)."""
        results = json.loads((self.root / "results/yesno/results.json").read_text())
        return [{k: v for k, v in run.items() if k not in ("date", "command")}
                for run in results["runs"].values()]

    def outputs(self) -> dict[str, bytes]:
        """Model manifests (the sha256 of every model file), feature archives, hypotheses."""
        exp = self.root / "exp/yesno"
        files = [f"{m}/manifest.json" for m in MODELS]
        files += [f"{f}/{s}/{n}" for f in ("feats", "feats_dnn") for s in ("train", "test")
                  for n in ("feats.npy", "feats.index")]
        files += [f"{m}/decode_test/{n}" for m in MODELS for n in ("hyp.txt", "per_utt", "wer")]
        return {f: (exp / f).read_bytes().replace(str(self.root).encode(), b"<root>")
                for f in files}

    def assert_same_as(self, other: "YesnoRun") -> None:
        assert self.scores() == other.scores()
        assert self.run_records() == other.run_records()
        mine, theirs = self.outputs(), other.outputs()
        assert [f for f in mine if mine[f] != theirs[f]] == []


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shared_data):
    """yesno with --nj 1 --cluster local: every task in the recipe's own process."""
    return YesnoRun(tmp_path_factory.mktemp("yesno_nj1"), shared_data / "yesno").run(
        "--nj", "1", "--cluster", "local")


@pytest.mark.slow
def test_yesno_on_a_dask_local_cluster_gives_identical_results(reference, tmp_path, shared_data):
    run = YesnoRun(tmp_path, shared_data / "yesno").run("--nj", "2", "--cluster", "dask")
    assert json.loads(run.scores())["mono"]["test"]["words"] == 232
    run.assert_same_as(reference)
    assert (tmp_path / "data/yesno/test/split2utt/2/wav.scp").is_file()   # one speaker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def scheduler(tmp_path):
    """A Dask scheduler and two single-threaded workers, each a separate process, as on
    a cluster's nodes. A task whose worker dies is retried once (allowed-failures 1)."""
    port = _free_port()
    env = {**ENV, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    log = open(tmp_path / "dask.log", "ab")
    cli = [sys.executable, "-m", "distributed.cli"]
    procs = [subprocess.Popen([*cli[:2], "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"],
                              env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)]
    address = f"tcp://127.0.0.1:{port}"
    for _ in range(2):
        procs.append(subprocess.Popen(
            [*cli[:2], "distributed.cli.dask_worker", address, "--nworkers", "1", "--nthreads",
             "1", "--no-dashboard"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path))
    from distributed import Client
    client = None
    try:        # the processes are stopped even when the scheduler is never reached
        client = Client(address, timeout=60)
        client.wait_for_workers(2, timeout=120)
        yield address, client
    finally:
        if client is not None:
            client.close()
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _kill_a_busy_worker(client, proc: subprocess.Popen, timeout: float = 120) -> str:
    """SIGKILL the worker process running one of the recipe's tasks; the key of that task."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the recipe ended before any task ran on a worker"
        busy = {addr: keys for addr, keys in client.processing().items() if keys}
        if busy:
            address, keys = sorted(busy.items())[0]
            pid = client.run(os.getpid, workers=[address])[address]
            os.kill(pid, signal.SIGKILL)
            return str(keys[0])
        time.sleep(0.01)
    raise AssertionError(f"no task reached a worker in {timeout} s")


@pytest.mark.slow
def test_yesno_joins_a_scheduler_survives_a_killed_worker_and_reruns_identically(
        reference, scheduler, tmp_path, shared_data):
    address, client = scheduler
    run = YesnoRun(tmp_path / "tcp", shared_data / "yesno")
    run.root.mkdir()
    proc = run.start("--nj", "2", "--cluster", address)
    killed = _kill_a_busy_worker(client, proc)
    run.finish(proc)                 # the task of the lost worker ran again on a worker
    assert killed.startswith("features train")       # the first stage run on the workers
    run.assert_same_as(reference)
    client.wait_for_workers(2, timeout=60)           # the nanny restarted the killed worker

    # A task that kills every worker it runs on fails its stage with one clear line ...
    with make_executor(2, address, progress=False) as ex:
        with pytest.raises(JobError, match=r"^align: task 1 of 1 \(0\) was running on workers "
                                           r"that died, too many times: .*rerun the recipe"):
            ex.map(_die, [0], desc="align")
    # ... and the recipe rerun on the same cluster redoes its decoding to the same results
    client.wait_for_workers(2, timeout=60)
    decoded = (run.root / "exp/yesno/mono/decode_test/hyp.txt").stat().st_mtime_ns
    run.run("--nj", "2", "--cluster", address, "--stage", "4", "--force")
    assert (run.root / "exp/yesno/mono/decode_test/hyp.txt").stat().st_mtime_ns != decoded
    run.assert_same_as(reference)
