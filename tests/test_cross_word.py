"""Cross-word triphones: a word's edge phones take the neighbouring word's phone (or
silence) as context in training graphs, in HCLG (Kaldi's C transducer) and in the trees
grown from them."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from asr.decoder import Decoder, DecoderConfig, align, decoding_graph
from asr.hmm import ContextTree, Topology, TransitionModel, training_graph
from asr.hmm.tree import LEFT, RIGHT, _Node
from asr.lexicon import Lexicon
from conftest import planted_scores

WORDS = [("ALPHA", ["AA", "L"]), ("BRAVO", ["B", "R", "AO"]), ("DELTA", ["D", "EH"]),
         ("ECHO", ["EY", "K", "OW"]), ("OH", ["OW"]), ("OH", ["AO"])]


def _setup():
    """Lexicon (one two-pronunciation one-phone word), and a cross-word tree whose every
    non-silence state asks about the left (state 0) or right (others) phone, with silence
    and the utterance edge on different sides: every pdf depends on the context."""
    lex = Lexicon.from_entries(WORDS)
    topo = Topology(len(lex.phones), 3, 3)
    nodes, roots = [], {}
    pdf = 0
    for phone in range(topo.num_phones):
        for state in range(topo.num_states(phone)):
            roots[(phone, state)] = len(nodes)
            if phone == 0:
                nodes.append(_Node(pdf=pdf))
                pdf += 1
                continue
            asked = frozenset(p for p in range(topo.num_phones) if p % 2 == 0)  # incl. silence
            here = len(nodes)
            nodes.append(_Node(position=LEFT if state == 0 else RIGHT, phones=asked,
                               yes=here + 1, no=here + 2))
            nodes += [_Node(pdf=pdf), _Node(pdf=pdf + 1)]
            pdf += 2
    return lex, TransitionModel(topo), ContextTree(nodes, roots, cross_word=True)


def _planted(lex, tree, tm, words, prons, silences, rng):
    """Frames whose best pdf follows the words' states in cross-word context; silence
    before word ``i`` where ``silences[i]`` (index len(words): after the last)."""
    seq = []                               # the phone sequence, silence as phone 0
    for i, w in enumerate(words):
        if silences[i]:
            seq.append(0)
        seq += lex.prons[w][prons[i]]
    if silences[len(words)]:
        seq.append(0)
    pdfs = []
    for k, p in enumerate(seq):
        left = seq[k - 1] if k else -1
        right = seq[k + 1] if k + 1 < len(seq) else -1
        if p == 0:
            left = right = -1
        pdfs += [tree.pdf(left, p, right, s) for s in range(tm.topology.num_states(p))
                 for _ in range(rng.integers(2, 6))]
    return planted_scores(pdfs, tree.num_pdfs, rng, 0.3)


@pytest.mark.parametrize("seed", range(6))
def test_training_graph_and_hclg_follow_contexts_across_words(seed):
    """Forced alignment on the cross-word training graph and decoding over the cross-word
    HCLG both recover a planted path whose every pdf depends on its neighbours, across
    words, optional silences and a one-phone word of two pronunciations."""
    lex, tm, tree = _setup()
    rng = np.random.default_rng(seed)
    words = [lex.words[i] for i in rng.integers(0, len(lex.words), size=rng.integers(1, 6))]
    prons = [int(rng.integers(len(lex.prons[w]))) for w in words]
    silences = [bool(x) for x in rng.integers(0, 2, size=len(words) + 1)]
    loglik, pdfs = _planted(lex, tree, tm, words, prons, silences, rng)

    graph = training_graph(words, lex, tree, tm)
    path = align(graph, tm, loglik, acoustic_scale=1.0)
    assert path is not None
    np.testing.assert_array_equal(graph.pdf[path], pdfs)
    assert graph.words_of(path) == [lex.word_index[w] for w in words]

    cfg = DecoderConfig(acoustic_scale=1.0, self_loop_scale=1.0)
    result = Decoder(decoding_graph(lex, tree, tm, cfg), cfg).decode(loglik)
    assert result.words == words
    np.testing.assert_array_equal(result.pdfs, pdfs)


def test_word_internal_graph_cannot_follow_cross_word_contexts():
    """The same planted path through a word-internal graph of the same tree: its edge
    phones carry -1 contexts, so it cannot reproduce the pdfs (the check above has teeth)."""
    lex, tm, tree = _setup()
    rng = np.random.default_rng(1)
    words = ["BRAVO", "ECHO", "ALPHA"]
    loglik, pdfs = _planted(lex, tree, tm, words, [0, 0, 0], [False, False, True, False], rng)
    graph = training_graph(words, lex, tree, tm, cross_word=False)
    path = align(graph, tm, loglik, acoustic_scale=1.0)
    assert path is None or not np.array_equal(graph.pdf[path], pdfs)


def test_contexts_of_every_node_match_their_neighbours():
    """Each node's (left, phone, right) is its phone's neighbours on every arc into and
    out of its phone: no arc joins copies whose contexts disagree."""
    lex, tm, tree = _setup()
    graph = training_graph(["OH", "BRAVO", "OH"], lex, tree, tm)
    ctx = graph.context
    for src, dst in zip(graph.arc_src, graph.arc_dst):
        if src == dst or ctx[src, 3] + 1 == ctx[dst, 3] and ctx[dst, 3] != 0:
            continue                                    # self-loop, or within one phone
        a, b = ctx[src], ctx[dst]
        if a[1] != 0 and b[1] != 0:                     # phone to phone, no silence
            assert a[2] == b[1] and b[0] == a[1], (a, b)
        elif a[1] != 0:                                 # phone to silence
            assert a[2] == 0, a
        elif b[1] != 0:                                 # silence to phone
            assert b[0] == 0, b
    for node in np.flatnonzero(np.isfinite(graph.start)):
        assert ctx[node, 1] == 0 or ctx[node, 0] == -1
    for node in np.flatnonzero(graph.final_tid >= 0):
        assert ctx[node, 1] == 0 or ctx[node, 2] == -1


def test_tree_json_keeps_the_kind_of_context():
    lex, tm, tree = _setup()
    data = tree.to_dict()
    assert data["cross_word"] is True
    assert ContextTree.from_dict(data).cross_word
    word_internal = ContextTree.monophone(tm.topology)
    assert "cross_word" not in word_internal.to_dict()      # as every tree written before
    assert not ContextTree.from_dict(word_internal.to_dict()).cross_word
    with pytest.raises(ValueError, match="cross_word"):
        ContextTree.from_dict({**data, "cross_word": "yes"})


def test_a_cross_word_triphone_trains_saves_and_decodes(shared_data, tmp_path):
    """Connected FSDD digits: mono -> tri with cross_word = true. The tree says so and keeps
    it through save and load, it has contexts a word-internal tree cannot see (silence on
    the left of a word's first phone), and its cross-word HCLG decodes about as well as
    the word-internal triphone trained alike."""
    from asr.data import DataDir, prepare_fsdd_connected
    from asr.evaluate import decode_features
    from asr.features import FeatureConfig, apply_pipeline, compute_archive_in_memory
    from asr.gmm.systems import HmmConfig, train_monophone, train_triphone
    from asr.gmm.train import GmmTrainConfig
    from asr.scoring import compute_wer
    from asr.system import AsrSystem
    from asr.training import Utterance

    prepare_fsdd_connected(shared_data / "fsdd", tmp_path / "data", 120, 40, seed=0)
    train, test = DataDir.load(tmp_path / "data/train"), DataDir.load(tmp_path / "data/test")
    cfg = FeatureConfig(kind="mfcc", deltas=2, cmvn="speaker")
    feats = apply_pipeline(compute_archive_in_memory(train.wavs, cfg, progress=False), cfg,
                           train.utt2spk)
    utts = [Utterance(u, feats[u], train.text[u]) for u in train.utts]
    lexicon = Lexicon.load(Path(__file__).resolve().parents[1] / "data/lexicons/digits.txt")
    decoding = DecoderConfig(grammar="loop", acoustic_scale=0.1, beam=15.0, self_loop_scale=1.0)
    mono, _ = train_monophone(utts, lexicon, cfg, HmmConfig(), GmmTrainConfig(
        num_iters=12, max_gaussians=200, mixup_iters=8,
        realign_iters=[1, 2, 3, 4, 6, 8, 10]), decoding, progress=False)
    tri_cfg = GmmTrainConfig(num_iters=10, num_leaves=150, max_gaussians=500, mixup_iters=6,
                             realign_iters=[5, 8])
    word, _ = train_triphone(utts, mono, tri_cfg, decoding, progress=False)
    cross, _ = train_triphone(utts, mono, dataclasses.replace(tri_cfg, cross_word=True),
                                   decoding, progress=False)
    assert cross.tree.cross_word and not word.tree.cross_word
    cross.save(tmp_path / "cross")
    loaded = AsrSystem.load(tmp_path / "cross")
    assert loaded.tree.cross_word

    silence = 0
    first = {p[0] for prons in lexicon.prons.values() for p in prons}
    contexts = {tuple(c) for u in utts[:20] for c in training_graph(
        u.words, cross.lexicon, cross.tree, cross.tm).context}
    assert any(c[0] == silence and c[1] in first for c in contexts)

    test_feats = apply_pipeline(compute_archive_in_memory(test.wavs, cfg, progress=False), cfg,
                                test.utt2spk)
    wers = {}
    for name, system in (("word", word), ("cross", loaded)):
        hyps = decode_features(system, test_feats, progress=False)
        wers[name] = compute_wer(test.text, hyps)
    print({k: v.line() for k, v in wers.items()})
    assert wers["cross"].wer <= wers["word"].wer + 5.0, {k: v.line() for k, v in wers.items()}

