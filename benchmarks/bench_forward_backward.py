"""Forward-backward throughput (frames × states per second): asr against hmmlearn.

    python benchmarks/bench_forward_backward.py [--rounds N]

Both sides work on the same precomputed emission log-likelihoods (50 sequences × 400
frames = 20,000 frames), so only the recursions and the posteriors are timed:

- ``asr``: ``asr.hmm.forward_backward.forward_backward_arcs`` (numba; compiled before timing),
  which returns the total log-likelihood, state posteriors and expected arc counts.
- ``hmmlearn E-step``: what ``hmmlearn`` computes per sequence in an EM iteration, the same
  outputs: ``_fit_log`` (``_hmmc.forward_log``, ``_hmmc.backward_log``, posteriors) plus
  ``_hmmc.compute_log_xi_sum`` (expected transitions). Also with
  ``implementation="scaling"`` (``_fit_scaling`` + ``compute_scaling_xi_sum``).
- ``hmmlearn score_samples``: the public call, log-likelihood and state posteriors only
  (no transition counts), through a ``BaseHMM`` whose emission log-likelihoods are the input.

Cases: (a) dense ergodic HMMs, N = 10 and 40 states, all N² arcs: the same work on both
sides; (b) a left-to-right HMM as in ASR, N = 60 states, a self-loop and a forward arc each:
hmmlearn still runs over its dense N × N matrix (mostly zeros), asr over its 2N arcs.
Throughput counts frames × states (T·N) per second on both sides. The total log-likelihoods
are checked to agree (relative 1e-6) before timing.
"""
from __future__ import annotations

import warnings

import numpy as np

import _harness as h

NUM_SEQS, SEQ_LEN = 50, 400


def make_case(kind: str, n: int, rng: np.random.Generator) -> dict:
    if kind == "ergodic":
        trans = rng.dirichlet(np.ones(n), size=n)
        start = rng.dirichlet(np.ones(n))
    else:  # left-to-right: self-loop 0.6, forward 0.4, last state loops only; start in state 0
        trans = np.zeros((n, n))
        idx = np.arange(n - 1)
        trans[idx, idx] = 0.6
        trans[idx, idx + 1] = 0.4
        trans[n - 1, n - 1] = 1.0
        start = np.zeros(n)
        start[0] = 1.0
    src, dst = np.nonzero(trans)
    with np.errstate(divide="ignore"):
        log_start = np.log(start)
    # Emission log-likelihoods in the range a 39-dim GMM gives (around -60 per frame).
    loglik = [rng.normal(-60.0, 8.0, size=(SEQ_LEN, n)) for _ in range(NUM_SEQS)]
    return {"kind": kind, "n": n, "trans": trans, "start": start, "loglik": loglik,
            "arc_src": src.astype(np.int32), "arc_dst": dst.astype(np.int32),
            "arc_w": np.log(trans[src, dst]), "log_start": log_start,
            "final": np.zeros(n), "pdf": np.arange(n, dtype=np.int32)}


def contenders(case: dict) -> tuple[dict, dict, dict]:
    """(timed callables, total log-likelihood of each, agreement with asr) for one case."""
    from hmmlearn import _hmmc
    from hmmlearn.base import BaseHMM

    from asr.hmm.forward_backward import forward_backward_arcs

    class PrecomputedHMM(BaseHMM):
        """An HMM whose 'features' are already the emission log-likelihoods (T, N)."""

        def _compute_log_likelihood(self, X):
            return X

        def _init(self, X, lengths=None):  # never fitted here
            raise NotImplementedError

    def model(implementation):
        m = PrecomputedHMM(n_components=case["n"], implementation=implementation)
        m.startprob_, m.transmat_ = case["start"], case["trans"]
        return m

    log_model, scaling_model = model("log"), model("scaling")
    seqs = case["loglik"]
    X = np.concatenate(seqs)
    lengths = [len(s) for s in seqs]
    args = (case["pdf"], case["arc_src"], case["arc_dst"], case["arc_w"], case["log_start"],
            case["final"])

    def ours():
        return sum(forward_backward_arcs(ll, *args).log_likelihood for ll in seqs)

    def estep_log():
        total = 0.0
        for ll in seqs:
            lattice, lp, post, fwd, bwd = log_model._fit_log(ll)
            np.exp(_hmmc.compute_log_xi_sum(fwd, log_model.transmat_, bwd, lattice))  # timed
            total += lp
        return total

    def estep_scaling():
        total = 0.0
        for ll in seqs:
            frameprob, lp, post, fwd, bwd = scaling_model._fit_scaling(ll)
            _hmmc.compute_scaling_xi_sum(fwd, scaling_model.transmat_, bwd, frameprob)  # timed
            total += lp
        return total

    def score_log():
        return log_model.score_samples(X, lengths)[0]

    def score_scaling():
        return scaling_model.score_samples(X, lengths)[0]

    fns = {"asr": ours, "hmmlearn E-step, log": estep_log,
           "hmmlearn E-step, scaling": estep_scaling,
           "hmmlearn score_samples, log": score_log,
           "hmmlearn score_samples, scaling": score_scaling}
    # Untimed check, which also compiles asr's numba code: totals, posteriors and transition
    # counts of every sequence against asr's.
    mine = [forward_backward_arcs(ll, *args) for ll in seqs]
    gamma = np.concatenate([r.node_posteriors for r in mine])
    src, dst = case["arc_src"], case["arc_dst"]
    totals = {"asr": float(sum(r.log_likelihood for r in mine))}
    checks = {"asr": "reference"}
    for impl, m in (("log", log_model), ("scaling", scaling_model)):
        posts, bad_xi, d_xi, total = [], 0, 0.0, 0.0
        for ll, r in zip(seqs, mine):
            if impl == "log":
                lattice, lp, post, fwd, bwd = m._fit_log(ll)
                xi = np.exp(_hmmc.compute_log_xi_sum(fwd, m.transmat_, bwd, lattice))
            else:
                lattice, lp, post, fwd, bwd = m._fit_scaling(ll)
                xi = _hmmc.compute_scaling_xi_sum(fwd, m.transmat_, bwd, lattice)
            posts.append(post)
            total += lp
            if np.isnan(xi).any():
                bad_xi += 1
            else:
                d_xi = max(d_xi, float(np.abs(xi[src, dst] - r.arc_counts).max()))
        scored_total, scored = m.score_samples(X, lengths)
        totals[f"hmmlearn E-step, {impl}"] = float(total)
        totals[f"hmmlearn score_samples, {impl}"] = float(scored_total)
        for label, p, extra in ((f"hmmlearn E-step, {impl}", np.concatenate(posts),
                                 f"; transition counts NaN in {bad_xi}/{len(seqs)} sequences"
                                 if bad_xi else f", Δ counts {d_xi:.0e}"),
                                (f"hmmlearn score_samples, {impl}", scored, "")):
            nan_rows = int(np.isnan(p).any(axis=1).sum())
            if nan_rows:
                nan_seqs = sum(bool(np.isnan(q).any())
                               for q in np.split(p, np.cumsum(lengths)[:-1]))
                checks[label] = (f"posteriors NaN in {nan_seqs}/{len(seqs)} sequences "
                                 f"({nan_rows} frames)" + extra)
            else:
                checks[label] = f"Δγ {np.abs(p - gamma).max():.0e}" + extra
    for name, total in totals.items():
        if not np.isclose(total, totals["asr"], rtol=1e-6, atol=0):
            raise SystemExit(f"{case['kind']} N={case['n']}: {name} gives total log-likelihood "
                             f"{total!r}, asr {totals['asr']!r}")
    return fns, totals, checks


def run(rounds: int, threads: int = 1) -> dict:
    # hmmlearn's scaling backward pass overflows on some left-to-right sequences (reported in
    # the agreement column); its RuntimeWarnings would only clutter the log.
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="hmmlearn")
    threads_used = h.limit_threads(threads)   # numba and hmmlearn run on one thread anyway
    rng = np.random.default_rng(0)
    cases = [make_case("ergodic", 10, rng), make_case("ergodic", 40, rng),
             make_case("left-to-right", 60, rng)]
    frames = NUM_SEQS * SEQ_LEN
    rows, numbers, goals, per_arc = [], {}, {}, {}
    for case in cases:
        label = f"{case['kind']}, N={case['n']}, {len(case['arc_src'])} arcs"
        h.log(f"forward-backward: {label}")
        fns, totals, checks = contenders(case)
        t = h.interleave(fns, rounds, h.log)
        for name in fns:
            med = t.median(name)
            ratio = "1 (reference)" if name == "asr" else (
                f"**{t.paired_ratio(name, 'asr'):.2f}×** (best {t.best_ratio(name, 'asr'):.2f}×)")
            arcs = len(case["arc_src"]) if name == "asr" else case["n"] ** 2
            per_arc[(label, name)] = med / (frames * arcs) * 1e9
            rows.append([label if name == "asr" else "", name,
                         h.si(frames * case["n"] / med), f"{per_arc[(label, name)]:.1f}",
                         h.ms(med), h.ms(t.best(name)), ratio, checks[name]])
            numbers[f"{label} / {name}"] = {"median_s": med, "best_s": t.best(name),
                                            "seconds": t.seconds[name],
                                            "total_loglik": totals[name],
                                            "agreement": checks[name]}
        goals[label] = t.paired_ratio("hmmlearn E-step, log", "asr")
    worst = min(goals, key=goals.get)
    md = "\n".join([
        "### Forward-backward (`benchmarks/bench_forward_backward.py`)",
        "",
        f"{NUM_SEQS} sequences × {SEQ_LEN} frames = {frames:,} frames of precomputed emission "
        f"log-likelihoods per case; {rounds} interleaved rounds. Throughput = frames × states "
        "per second (median round). asr returns posteriors and expected arc counts; the "
        "E-step rows are hmmlearn computing the same (posteriors and expected transitions); "
        "`score_samples` computes posteriors only. Total log-likelihoods agree to 1e-6 "
        f"(checked before timing). Threads: {threads_used}.",
        "",
        h.table(["case", "implementation", "frames·states/s", "ns per frame·arc", "median ms",
                 "best ms", "asr speed-up", "agreement with asr (max abs)"], rows),
        "",
        "Goal: asr ≥ 3× hmmlearn (its default log implementation, same outputs). Measured: "
        + ", ".join(f"{label}: **{g:.2f}×** ({'met' if g >= 3 else 'missed'})"
                    for label, g in goals.items()) + ".",
        "",
        "Reading: \"ns per frame·arc\" counts the arcs each side visits (hmmlearn always all "
        "N², asr only the graph's). On dense graphs the work is the same and the cost per arc "
        "decides: asr pays " + "/".join(f"{per_arc[(l, 'asr')]:.0f}" for l in goals)
        + " ns, hmmlearn's log path " + "/".join(
            f"{per_arc[(l, 'hmmlearn E-step, log')]:.0f}" for l in goals)
        + " ns and its scaling path " + "/".join(
            f"{per_arc[(l, 'hmmlearn E-step, scaling')]:.0f}" for l in goals)
        + " ns (cases in table order). asr adds each arc in log space with an `exp` and a "
        "`log1p` in the forward pass and again, plus an `exp` for the arc count, in the "
        "backward pass; hmmlearn's log path takes one `exp` per arc and one `log` per state "
        "(log-sum-exp per destination), its scaling path only multiplies and adds. On the "
        "left-to-right graph asr wins by visiting 2N arcs instead of N². hmmlearn's scaling "
        "path overflows in the backward pass on some left-to-right sequences "
        "(NaN posteriors, see the last column), so it is shown but not taken as the peer.",
    ])
    return {"name": "forward_backward", "markdown": md, "numbers": numbers,
            "goal_ratios": goals, "goal_ratio": goals[worst], "goal": 3.0}


def main() -> None:
    args = h.cli(__doc__.splitlines()[0], default_rounds=3)
    info = h.machine()
    h.emit(args, run(args.rounds, args.threads), info)


if __name__ == "__main__":
    main()
