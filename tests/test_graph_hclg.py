"""Decoding graphs the Kaldi way: lang, L, G, HCLG (asr.graph)."""
import math
from pathlib import Path

import kaldifst
import numpy as np
import pytest

from asr.graph import FstArrays
from asr.graph.fst import ArcTable, from_fst, to_fst
from asr.graph.grammar_fst import arpa_fst, bigram_fst, single_word_fst, word_loop_fst
from asr.graph.hclg import HclgConfig, build_hclg, compile_hclg
from asr.graph.lang import add_disambig, make_lang, read_symbol_table
from asr.hmm.transitions import Topology, TransitionModel
from asr.hmm.tree import ContextTree
from asr.lexicon import Lexicon

ROOT = Path(__file__).resolve().parents[1]
YESNO_MAX_WER = 2.0


@pytest.fixture
def yesno_lang():
    return make_lang(Lexicon.load(ROOT / "data/lexicons/yesno.txt"), silence_prob=0.3)


def hmms(lexicon, self_loop=0.6):
    topo = Topology(len(lexicon.phones), 3, 2)
    tm = TransitionModel(topo, self_loop)
    return ContextTree.monophone(topo), tm


def best(fst, ilabels):
    """(output labels, cost) of the best path of ``fst`` reading ``ilabels``, or None."""
    kaldifst.arcsort(fst, sort_type="ilabel")
    path = kaldifst.shortest_path(kaldifst.compose(kaldifst.make_linear_acceptor(ilabels), fst))
    ok, _, out, weight = kaldifst.get_linear_symbol_sequence(path)
    return (list(out), weight.value) if ok and path.num_states else None


def test_disambig_symbols_follow_kaldi():
    numbers, top = add_disambig([(1, 2), (1, 2, 3), (1, 2), (3,), (4,)])
    assert numbers == [1, 0, 2, 0, 0] and top == 2     # homophones and the prefix numbered


def test_lang_tables_and_files(yesno_lang, tmp_path):
    lang = yesno_lang
    assert lang.words == ["<eps>", "NO", "YES", "#0", "<s>", "</s>"]
    assert lang.phones == ["<eps>", "SIL", "N", "Y", "#0", "#1"]   # #1: after silence
    lang.write(tmp_path / "lang")
    assert read_symbol_table(tmp_path / "lang/words.txt") == lang.words
    assert (tmp_path / "lang/phones/disambig.int").read_text().split() == ["4", "5"]
    assert kaldifst.StdVectorFst.read(str(tmp_path / "lang/L_disambig.fst")).num_states > 3


def test_lexicon_accepts_words_with_silence_costs(yesno_lang):
    lang, p = yesno_lang, 0.3
    sil, n, y = 1, 2, 3
    assert best(lang.L(), [y, n]) == ([2, 1], pytest.approx(-3 * math.log(1 - p), abs=1e-5))
    out, cost = best(lang.L(), [sil, n, sil])
    assert out == [1] and cost == pytest.approx(-2 * math.log(p), abs=1e-5)
    assert best(lang.L(), [n, sil, sil]) is None      # no two silences in a row


def test_grammars_give_each_sentence_its_cost(yesno_lang, tmp_path):
    lang = yesno_lang
    loop = word_loop_fst(lang)
    assert best(loop, [2, 1, 1])[1] == pytest.approx(3 * math.log(2), abs=1e-5)
    assert best(loop, []) is None                      # at least one word
    assert best(single_word_fst(lang), [1])[1] == pytest.approx(math.log(2), abs=1e-5)
    assert best(single_word_fst(lang), [1, 2]) is None
    with np.errstate(divide="ignore"):
        table = np.log([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])
    g = bigram_fst(lang, ["NO", "YES"], table)
    assert best(g, [1, 2])[1] == pytest.approx(-math.log(0.5 * 0.3 * 0.3), abs=1e-5)
    arpa = tmp_path / "lm.arpa"
    arpa.write_text("\\data\\\nngram 1=4\nngram 2=1\n\n\\1-grams:\n-1.0 <s> -0.5\n-0.5 NO -0.3\n"
                    "-0.7 YES\n-0.6 </s>\n\n\\2-grams:\n-0.2 <s> NO\n\n\\end\\\n")
    g = from_fst(arpa_fst(arpa, lang))
    backoff = g.ilabel == lang.word_disambig_symbol
    assert backoff.any() and (g.olabel[backoff] == 0).all()
    g.ilabel[backoff] = 0                        # #0 read as epsilon: back-off costs count
    _, cost = best(to_fst(g), [1, 2])
    assert cost == pytest.approx(math.log(10) * (0.2 + 0.3 + 0.7 + 0.6), abs=1e-4)


def label_of(graph, tm, tree, phone, state, forward=True, context=(-1, -1)):
    tid = 2 * tm.tstate(phone, state) + int(forward)
    pdf = tree.pdf(context[0], phone, context[1], state)
    (k,) = np.flatnonzero((graph.label_tid == tid) & (graph.label_pdf == pdf))
    return int(k)


def test_hclg_path_cost_is_lexicon_grammar_and_scaled_transitions(yesno_lang):
    lang, p = yesno_lang, 0.3
    tree, tm = hmms(lang.lexicon, self_loop=0.6)
    graph = compile_hclg(lang, word_loop_fst(lang), tree, tm, HclgConfig(self_loop_scale=0.1))
    fst = graph.fst
    disambig_free = fst.ilabel.max() < graph.num_labels and fst.olabel.max() <= 2
    assert disambig_free                               # only graph labels and words remain
    yes = lang.lexicon.phones.index("Y")
    # YES, each state once (no self-loop), no silence: L's two no-silence costs, G's log 2
    # and, per state, 0.1 * -log(1 - p(loop)).
    frames = [label_of(graph, tm, tree, yes, s) for s in range(3)]
    out, cost = best(to_fst(ArcTable.from_arrays(fst)), frames)
    assert out == [2]
    expect = -2 * math.log(1 - p) + math.log(2) - 3 * 0.1 * math.log(0.4)
    assert cost == pytest.approx(expect, abs=2e-3)   # minimization quantizes by 1/1024
    # A self-loop on the middle state adds 0.1 * -log(p(loop)).
    loop = label_of(graph, tm, tree, yes, 1, forward=False)
    out, cost2 = best(to_fst(ArcTable.from_arrays(fst)), frames[:2] + [loop] + frames[2:])
    assert out == [2] and cost2 - cost == pytest.approx(-0.1 * math.log(0.6), abs=2e-3)


def test_hclg_is_stochastic_when_its_parts_are(yesno_lang):
    """Scales 1 and a stochastic G: the probabilities of all paths sum to one."""
    lang = yesno_lang
    tree, tm = hmms(lang.lexicon)
    graph = compile_hclg(lang, single_word_fst(lang), tree, tm,
                         HclgConfig(self_loop_scale=1.0))
    fst, n = graph.fst, graph.fst.num_states
    src = np.repeat(np.arange(n), np.diff(fst.arc_offsets))
    move = np.zeros((n, n))
    np.add.at(move, (src, fst.nextstate), np.exp(-fst.cost.astype(np.float64)))
    ends = np.exp(-fst.final_cost.astype(np.float64))
    mass = np.linalg.solve(np.eye(n) - move, ends)[fst.start]
    assert mass == pytest.approx(1.0, abs=1e-3)


def test_word_internal_triphones_use_the_contexts_of_training():
    """A tree that splits on the right phone: inside a word the context is the next phone,
    at a word's end it is the boundary -1 (never the next word's first phone)."""
    from asr.hmm.tree import _Node

    lexicon = Lexicon.from_entries([("AB", ["A", "B"]), ("A", ["A"])])
    topo = Topology(len(lexicon.phones), 1, 1)
    tm = TransitionModel(topo)
    b = lexicon.phones.index("B")
    nodes = [_Node(pdf=0), _Node(pdf=-1, position=2, phones=frozenset({b}), yes=2, no=3),
             _Node(pdf=1), _Node(pdf=2), _Node(pdf=3)]
    tree = ContextTree(nodes, {(0, 0): 0, (1, 0): 1, (2, 0): 4})
    lang = make_lang(lexicon)
    graph = compile_hclg(lang, word_loop_fst(lang), tree, tm)
    fst = to_fst(ArcTable.from_arrays(graph.fst))
    a = lexicon.phones.index("A")
    a_in_word = label_of(graph, tm, tree, a, 0, context=(-1, b))
    a_at_end = label_of(graph, tm, tree, a, 0)
    b_end = label_of(graph, tm, tree, b, 0)
    assert best(fst, [a_in_word, b_end])[0] == [lang.word_symbol("AB")]
    assert best(fst, [a_at_end, b_end]) is None        # "A" then a word starting with B?
    assert best(fst, [a_at_end, a_at_end])[0] == [lang.word_symbol("A")] * 2


def test_graph_is_cached_per_lang_tree_and_scales(yesno_lang, tmp_path, caplog):
    tree, tm = hmms(yesno_lang.lexicon)
    g = word_loop_fst(yesno_lang)
    first = build_hclg(yesno_lang, g, tree, tm, tmp_path / "graph")
    assert (tmp_path / "graph/words.txt").is_file()
    with caplog.at_level("INFO", logger="asr.graph.hclg"):
        again = build_hclg(yesno_lang, g, tree, tm, tmp_path / "graph")
    assert "cached" in caplog.text and np.array_equal(again.fst.cost, first.fst.cost)
    other = build_hclg(yesno_lang, g, tree, tm, tmp_path / "graph", HclgConfig(self_loop_scale=1))
    assert not np.array_equal(other.fst.cost, first.fst.cost)


def test_arc_table_round_trip_is_exact():
    rng = np.random.default_rng(0)
    n = 500
    table = ArcTable(0, np.where(rng.random(50) < 0.2, rng.random(50), np.inf).astype(np.float32),
                     rng.integers(0, 50, n), rng.integers(0, 50, n), rng.integers(0, 9, n),
                     rng.integers(0, 9, n), rng.random(n).astype(np.float32) * 30)
    table.src[0] = 0
    back = from_fst(to_fst(table))
    key = lambda t: np.lexsort((t.cost, t.olabel, t.ilabel, t.dst, t.src))  # noqa: E731
    for name in ("src", "dst", "ilabel", "olabel", "cost"):
        assert np.array_equal(getattr(table, name)[key(table)], getattr(back, name)[key(back)])
    assert np.array_equal(table.final, back.final)
    graph = FstArrays.from_kaldifst(to_fst(table))
    again = FstArrays.from_kaldifst(graph.to_kaldifst())
    for name in ("arc_offsets", "ilabel", "olabel", "cost", "nextstate", "final_cost"):
        assert np.array_equal(getattr(graph, name), getattr(again, name))


def test_yesno_decoded_through_hclg_by_kaldis_search(shared_data, tmp_path):
    """A monophone trained here, decoded by kaldi_decoder.FasterDecoder over HCLG: as good as
    the project's own decoder."""
    kd = pytest.importorskip("kaldi_decoder")
    from asr.data import prepare_yesno
    from asr.decoder import DecoderConfig
    from asr.evaluate import decode_features
    from asr.features import FeatureConfig, apply_pipeline, compute_archive_in_memory
    from asr.gmm.systems import HmmConfig, train_monophone
    from asr.gmm.train import GmmTrainConfig
    from asr.scoring import compute_wer
    from asr.training import Utterance

    dirs = prepare_yesno(shared_data / "yesno", tmp_path / "data")
    mfcc = FeatureConfig(kind="mfcc", num_mel_bins=23, num_ceps=13, deltas=2, cmvn="speaker")
    feats = {name: apply_pipeline(compute_archive_in_memory(dirs[name].wavs, mfcc,
                                                            progress=False),
                                  mfcc, dirs[name].utt2spk) for name in ("train", "test")}
    lexicon = Lexicon.load(ROOT / "data/lexicons/yesno.txt")
    utts = [Utterance(u, f, dirs["train"].text[u]) for u, f in feats["train"].items()]
    cfg = DecoderConfig(grammar="loop", acoustic_scale=0.1, beam=40.0)
    system, _ = train_monophone(utts, lexicon, mfcc, HmmConfig(3, 5),
                                GmmTrainConfig(training="baum-welch", num_iters=15,
                                               max_gaussians=50, mixup_iters=10),
                                cfg, progress=False)
    refs = dirs["test"].text
    current = compute_wer(refs, decode_features(system, feats["test"], cfg, progress=False))

    lang = make_lang(lexicon, cfg.silence_prob)

    def decode(scale):
        graph = build_hclg(lang, word_loop_fst(lang), system.tree, system.tm,
                           tmp_path / f"graph_{scale}", HclgConfig(self_loop_scale=scale))
        fst = to_fst(ArcTable.from_arrays(graph.fst))
        hyps = {}
        for utt, f in feats["test"].items():
            scores = cfg.acoustic_scale * system.model.log_likelihoods(f)[:, graph.label_pdf[1:]]
            decoder = kd.FasterDecoder(fst, kd.FasterDecoderOptions(beam=16.0))
            decoder.decode(kd.DecodableCtc(scores.astype(np.float32)))
            ok, lattice = decoder.get_best_path()
            _, _, out, _ = kaldifst.get_linear_symbol_sequence(lattice)
            hyps[utt] = [graph.words[w] for w in out] if ok else []
        return compute_wer(refs, hyps)

    # Transitions unscaled, as the current decoder scores them: the same search space.
    same = decode(1.0)
    assert same.words == 232 and same.errors <= current.errors + 1
    kaldi = decode(0.1)                      # Kaldi's self-loop scale
    assert 100.0 * kaldi.errors / kaldi.words <= YESNO_MAX_WER


def _reference_hclg(lang, g, tree, tm, cfg):
    """HCLG built the way this module first did, every step in kaldifst: H o CLG composed,
    determinize*, #k -> epsilon, rmepsilon, minimize_encoded, then the same self-loops."""
    from asr.graph.hclg import (_DISAMBIG, _add_self_loops, _clg, _fst_arrays, _h, _Hmms)

    hmms = _Hmms(tree, tm)
    clg = to_fst(_clg(lang, g, hmms, cfg.context))
    tstates = hmms.graph_tstates()
    h, num_labels = _h(hmms, tstates, lang.num_disambig, _DISAMBIG, cfg.transition_scale)
    kaldifst.arcsort(clg, sort_type="ilabel")
    hclg = kaldifst.compose(h, clg)
    assert not kaldifst.determinize_star(hclg, use_log=True)
    table = from_fst(hclg)
    table.ilabel[table.ilabel >= num_labels] = 0
    hclg = to_fst(table)
    kaldifst.rmepsilon(hclg)
    kaldifst.minimize_encoded(hclg)
    return _fst_arrays(_add_self_loops(from_fst(hclg), tstates, tm, cfg.self_loop_scale))


def _random_inputs(graph: FstArrays, rng, count: int, max_len: int = 40):
    """Input label sequences of random paths from the start to a final state."""
    found = []
    while len(found) < count:
        state, labels = graph.start, []
        for _ in range(max_len):
            lo, hi = graph.arc_offsets[state], graph.arc_offsets[state + 1]
            if np.isfinite(graph.final_cost[state]) and (hi == lo or rng.random() < 0.15):
                found.append(labels)
                break
            if hi == lo:
                break
            a = rng.integers(lo, hi)
            if graph.ilabel[a]:
                labels.append(int(graph.ilabel[a]))
            state = graph.nextstate[a]
    return found


@pytest.mark.parametrize("split, minimize", [(False, False), (True, False), (True, True)],
                         ids=["monophone", "shared-pdf triphone", "minimized"])
def test_hclg_paths_cost_what_the_all_kaldifst_build_gives(tmp_path, split, minimize):
    """Against a build made only of kaldifst operations (with the final minimization), on a
    trigram LM with back-off arcs and homophones: every input sequence gets the same words
    and best cost. With ``split``, two hmms share their first pdf (a tree that asks about the
    right phone for the last state only), so H o CLG must be determinized; ``minimize``
    adds the optional minimization."""
    from asr.graph.hclg import _clg, _compose_h, _Hmms
    from asr.hmm.tree import _Node
    from asr.lm import train_kneser_ney, write_arpa

    lexicon = Lexicon.from_entries([("A", ["A"]), ("AB", ["A", "B"]), ("BA", ["B", "A"]),
                                    ("ABC", ["A", "B", "C"]), ("C", ["C"]),
                                    ("CA", ["C", "A"]), ("ABX", ["A", "B"])])
    lang = make_lang(lexicon, silence_prob=0.2)
    rng = np.random.default_rng(3)
    words = ["A", "AB", "BA", "ABC", "C", "CA", "ABX"]
    sentences = [" ".join(rng.choice(words, size=rng.integers(1, 6))) for _ in range(60)]
    write_arpa(train_kneser_ney(sentences, 3, words), tmp_path / "lm.arpa")
    g = arpa_fst(tmp_path / "lm.arpa", lang)
    topo = Topology(len(lexicon.phones), 3, 2)
    tm = TransitionModel(topo, 0.6)
    tree = ContextTree.monophone(topo)
    if split:
        a, b = lexicon.phones.index("A"), lexicon.phones.index("B")
        leaf = tree.roots[(a, 2)]
        tree.nodes += [_Node(pdf=-1, position=2, phones=frozenset({b}), yes=len(tree.nodes) + 1,
                             no=leaf), _Node(pdf=tree.num_pdfs)]
        tree = ContextTree(tree.nodes, {**tree.roots, (a, 2): len(tree.nodes) - 2})
        hmms = _Hmms(tree, tm)
        first = {hmms.label(-1, a, -1), hmms.label(-1, a, b)}
        assert len(first) == 2                 # two hmms for A, one first pdf
    hmms = _Hmms(tree, tm)
    clg = _clg(lang, g, hmms, "word")
    assert _compose_h(clg, hmms, hmms.graph_tstates(), 1.0)[2] is not split   # deterministic?
    cfg = HclgConfig(self_loop_scale=0.1)
    new = compile_hclg(lang, g, tree, tm, HclgConfig(self_loop_scale=0.1,
                                                     minimize=minimize)).fst
    old = _reference_hclg(lang, g, tree, tm, cfg)
    assert abs(new.num_states - old.num_states) <= 0.05 * old.num_states
    new_fst, old_fst = (to_fst(ArcTable.from_arrays(x)) for x in (new, old))
    inputs = _random_inputs(old, rng, 60) + _random_inputs(new, rng, 60)
    for labels in inputs:
        want, got = best(old_fst, labels), best(new_fst, labels)
        assert want is not None and got is not None
        assert got[0] == want[0] and got[1] == pytest.approx(want[1], abs=1e-3)
    # The best path of all.
    paths = [kaldifst.get_linear_symbol_sequence(kaldifst.shortest_path(f))
             for f in (old_fst, new_fst)]
    assert paths[0][0] and paths[1][0]
    assert paths[1][2] == paths[0][2]
    assert paths[1][3].value == pytest.approx(paths[0][3].value, abs=1e-3)
