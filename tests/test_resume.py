"""Interrupted recipes resume to the same results; the same seed gives the same bytes.

Each recipe runs as a separate process, as a user would run it. One run goes straight
through; another is killed outright (SIGKILL: no handler, no cleanup) in the middle of a
long training stage and then rerun, and must end with the same ``results.json`` (scores
and run records alike, but for date, commit and output folder),
bit-identical models (their manifests hold the sha256 of every file) and no temporaries
left behind. A second uninterrupted run checks that the same seed gives the same bytes.

The recipes run reduced (fewer iterations, and for FSDD two speakers and small connected
and noisy sets) to keep the tests short; resuming and determinism do not depend on size.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

YESNO = ["--set", "mono.num_iters=8", "--set", "mono.mixup_iters=6"]
FSDD = ["--set", "corpus.connected_train=20", "--set", "corpus.connected_test=10",
        "--set", 'corpus.speakers=["jackson","theo"]', "--set", 'corpus.heldout_folds=["theo"]',
        "--set", 'corpus.connected_heldout_speaker="theo"', "--set", 'corpus.noise_kinds=["white"]',
        "--set", "corpus.snrs=[10]", "--set", 'systems=["mono","tri"]',
        "--set", "mono.num_iters=6", "--set", "mono.mixup_iters=4",
        "--set", "mono.max_gaussians=100",
        "--set", "mono.realign_iters=[1,2,3,4]", "--set", "tri.num_iters=4",
        "--set", "tri.realign_iters=[2]", "--set", "tri.mixup_iters=2",
        "--set", "tri.max_gaussians=150", "--set", "tri.num_leaves=60",
        "--set", "jobs=1"]  # folds one after another: the kill lands between known folds
MODELS = {"yesno": ["mono", "dnn"], "fsdd": [f"{fold}/{system}" for fold in ("main", "heldout_theo")
                                      for system in ("mono", "tri")]}
TIMEOUT = 300


def _corpus(shared_data: Path, recipe: str) -> Path:
    return shared_data / "yesno" if recipe == "yesno" else shared_data / "fsdd" / "recordings"


class RecipeRun:
    """One output root (exp/, data/, results/) and the recipe processes run into it."""

    def __init__(self, recipe: str, root: Path, corpus: Path, extra: list[str]):
        self.recipe, self.root = recipe, root
        self.args = [sys.executable, str(REPO / "recipes" / recipe / "run.py"),
                     "--corpus", str(corpus), "--exp", str(root / "exp"),
                     "--data", str(root / "data"), "--results", str(root / "results"),
                     "--no-progress", *extra]
        self.log = root / "exp" / recipe / "run.log"

    def _log_since(self, offset: int) -> str:
        if not self.log.exists():
            return ""
        with open(self.log, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", errors="replace")

    def run(self, kill_at: str | None = None, occurrence: int = 1) -> str:
        """Run the recipe; with ``kill_at``, SIGKILL it as soon as its log shows that text
        ``occurrence`` times. Returns what this run wrote to the log."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        console = self.root / "console.txt"
        # The recipe imports the package of this checkout, whatever the environment has
        # installed (a script's own folder, not the working directory, starts sys.path).
        env = {**os.environ, "ASR_QUIET": "1",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        with open(console, "ab") as out:
            proc = subprocess.Popen(self.args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                    env=env)
        try:
            if kill_at is None:
                code = proc.wait(TIMEOUT)
                assert code == 0, console.read_text()[-3000:]
                return self._log_since(offset)
            deadline = time.monotonic() + TIMEOUT
            while self._log_since(offset).count(kill_at) < occurrence:
                assert proc.poll() is None, (f"the recipe ended before its log showed "
                                             f"{kill_at!r}:\n" + console.read_text()[-3000:])
                assert time.monotonic() < deadline, f"no {kill_at!r} in {TIMEOUT} s"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL
            return self._log_since(offset)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def results(self) -> tuple[dict, dict]:
        """The scores and run records, with this run's root, date and commit masked."""
        from asr.results import load_results, load_runs

        path = self.root / "results" / self.recipe / "results.json"
        masked = path.with_name("masked.json")
        masked.write_text(path.read_text().replace(str(self.root), "<root>"))
        runs = {system: {k: v for k, v in run.items() if k not in ("date", "commit")}
                for system, run in load_runs(masked).items()}
        return load_results(masked), runs

    def results_md(self) -> str:
        text = (self.root / "results" / self.recipe / "RESULTS.md").read_text()
        text = re.sub(r"\(run `[0-9a-f]+`\)", "(run)", text.replace(str(self.root), "<root>"))
        return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "<date>", text)

    def manifests(self) -> dict[str, bytes]:
        exp = self.root / "exp" / self.recipe
        return {m: (exp / m / "manifest.json").read_bytes() for m in MODELS[self.recipe]}

    def leftovers(self) -> list[Path]:
        """Temporaries of interrupted writes anywhere under the output root."""
        return [p for p in self.root.rglob(".*") if p.name.endswith((".tmp", ".old"))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shared_data):
    """recipe -> an uninterrupted run of it (run once per module, when first asked for)."""
    runs: dict[str, RecipeRun] = {}

    def get(recipe: str) -> RecipeRun:
        if recipe not in runs:
            runs[recipe] = _new_run(recipe, tmp_path_factory.mktemp(f"{recipe}_reference"),
                                    shared_data)
            runs[recipe].run()
        return runs[recipe]
    return get


def _new_run(recipe: str, root: Path, shared_data: Path) -> RecipeRun:
    return RecipeRun(recipe, root, _corpus(shared_data, recipe),
                     YESNO if recipe == "yesno" else FSDD)


@pytest.mark.parametrize("recipe", ["yesno", "fsdd"])
def test_same_seed_gives_identical_results(recipe, reference, tmp_path, shared_data):
    first, again = reference(recipe), _new_run(recipe, tmp_path, shared_data)
    again.run()
    assert again.results() == first.results()
    assert first.leftovers() == [] and again.leftovers() == []
    assert again.manifests() == first.manifests()
    if recipe == "yesno":
        assert again.results_md() == first.results_md()


def test_yesno_killed_while_training_resumes_to_identical_results(reference, tmp_path,
                                                                   shared_data):
    run = _new_run("yesno", tmp_path, shared_data)
    cut = run.run(kill_at="mono iteration 3:")
    assert "Stage 2: train_mono\n" in cut and "Stage 2: train_mono finished" not in cut
    assert not (tmp_path / "exp/yesno/mono").exists()          # no half model
    resumed = run.run()
    assert "Stage 1: features (done, skipped)" in resumed
    assert "Stage 2: train_mono finished" in resumed
    assert run.results() == reference("yesno").results()
    assert run.manifests() == reference("yesno").manifests()
    assert run.leftovers() == []


def test_fsdd_killed_in_mono_and_tri_resumes_to_identical_results(reference, tmp_path,
                                                                  shared_data):
    run = _new_run("fsdd", tmp_path, shared_data)
    exp = tmp_path / "exp" / "fsdd"
    # Killed while training the second fold's monophone system: the first fold's is kept.
    cut = run.run(kill_at="mono iteration 1:", occurrence=2)
    assert "Stage 2: mono finished" not in cut
    assert (exp / "main/mono/manifest.json").exists()
    assert not (exp / "heldout_theo/mono").exists()
    # Resumed, then killed again while training the first triphone system.
    cut = run.run(kill_at="tri iteration 1:")
    assert "Stage 1: features (done, skipped)" in cut and "Stage 2: mono finished" in cut
    assert "Stage 3: tri finished" not in cut
    assert not (exp / "main/tri").exists()
    resumed = run.run()
    assert "Stage 2: mono (done, skipped)" in resumed and "Stage 3: tri finished" in resumed
    assert run.results() == reference("fsdd").results()
    assert run.manifests() == reference("fsdd").manifests()
    assert run.leftovers() == []


def test_a_new_run_sweeps_what_a_killed_run_left(tmp_path):
    """Temporaries of writes cut short by SIGKILL go when the next run starts."""
    from asr.fileio import atomic_dir, atomic_file
    from asr.recipe import Stage, run_stages

    exp = tmp_path / "exp"
    (exp / "mono" / ".acoustic.k2j4x9_a.tmp").mkdir(parents=True)      # inside a model dir
    (exp / ".mono.abcd1234.tmp").mkdir()                               # a model being saved
    (exp / ".mono.abcd1234.tmp" / "tree.json").write_text("{")
    (exp / ".timings.json.zz_9y8x7.tmp").write_text("{")               # a file being written
    (exp / ".decode.old").mkdir()                                      # a directory being swapped
    (exp / ".hidden_but_mine").write_text("kept")
    ran = []
    run_stages([Stage(0, "one", lambda: ran.append(1))], exp, 0, 10)
    assert ran == [1]
    left = sorted(p.relative_to(exp).as_posix() for p in exp.rglob("*"))
    assert left == [".done", ".done/00-one", ".hidden_but_mine", "mono"]

    data = tmp_path / "data"
    (data / ".train.q1w2e3r4.tmp").mkdir(parents=True)
    (data / ".train_x.q1w2e3r4.tmp").mkdir()                           # another target's
    with atomic_dir(data / "train") as tmp:
        (tmp / "text").write_text("u1 YES\n")
    with atomic_file(data / "f.txt") as tmp:
        tmp.write_text("x")
    assert sorted(p.name for p in data.iterdir()) == [".train_x.q1w2e3r4.tmp", "f.txt", "train"]


def test_a_stage_that_runs_clears_the_markers_of_later_stages(tmp_path):
    """A rerun from stage 1 that fails in it leaves stage 2 to run next time: stage 2's
    marker from the first run described outputs made from stage 1's old ones."""
    from asr.recipe import Stage, run_stages

    exp, ran = tmp_path / "exp", []

    def fail():
        raise RuntimeError("stopped")

    stages = [Stage(0, "zero", lambda: ran.append(0)), Stage(1, "one", lambda: ran.append(1)),
              Stage(2, "two", lambda: ran.append(2))]
    run_stages(stages, exp, 0, 10)
    assert ran == [0, 1, 2]
    with pytest.raises(RuntimeError):
        run_stages([stages[0], Stage(1, "one", fail), stages[2]], exp, 1, 10, force=True)
    assert sorted(p.name for p in (exp / ".done").iterdir()) == ["00-zero"]
    ran.clear()
    run_stages(stages, exp, 0, 10)
    assert ran == [1, 2]
