"""A trained recogniser as one self-contained directory.

Layout of a model directory (everything needed to turn audio into words)::

    manifest.json      format version, model type, sha256 of every other file
    features.json      the FeatureConfig the model was trained with
    lexicon.json       phones and pronunciations
    tree.json          context dependency: (left, phone, right, state) -> pdf
    transitions.json   the transition model
    decoder.json       default search settings (grammar, beam, scales)
    transform.npz      optional: a feature transform after the pipeline (LDA+MLLT, tri2b)
    adaptation.json    optional: the system is speaker-adapted (fMLLR, tri3b) and its settings
    acoustic/          the acoustic model's own files (see ``asr.models``)
    si_acoustic/       optional, with adaptation.json: the speaker-independent "alignment
                       model" of the first decoding pass (same tree, unadapted features)
    fmllr_acoustic/    optional, with adaptation.json: the GMM that estimates the fMLLR
                       transforms when the system's own model is not one (a hybrid on
                       tri3b's fMLLR features)

What the acoustic model scores is :meth:`AsrSystem.model_input` of the base features (the
archive's MFCC or fbank): the ``features.json`` pipeline (CMVN, deltas, splicing), then the
transform if there is one. Every caller goes through it, so none can forget the transform.
A speaker-adapted system scores that input only after :meth:`AsrSystem.adapt` (a first
decoding pass, one fMLLR transform per speaker; see ``asr.adaptation``), which every decoding
path (``asr.evaluate``, ``Experiment.decode``, ``asr.lvcsr``, the ``asr`` command) calls.

Loading checks the format version, that the manifest lists every file above (and at least
one under ``acoustic/``), and every checksum, so an altered or partly copied directory is
refused with an error naming the file. A ``transform.npz`` or ``adaptation.json`` that the
manifest does not list is refused too (directories written before them have none and still
load).
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from asr.decoder import Decoder, DecoderConfig, decoding_graph
from asr.errors import ModelError
from asr.features import FeatureConfig, apply_pipeline
from asr.fileio import atomic_dir, write_json
from asr.hmm.transitions import TransitionModel
from asr.hmm.tree import ContextTree
from asr.lexicon import Lexicon
from asr.models import AcousticModel, model_class, read_json

if TYPE_CHECKING:      # asr.transforms imports asr.gmm; the seam must not (see test_architecture)
    from asr.transforms import FeatureTransform

FORMAT_VERSION = 1
TRANSFORM_FILE = "transform.npz"
ADAPTATION_FILE = "adaptation.json"
SI_MODEL_DIR = "si_acoustic"
FMLLR_MODEL_DIR = "fmllr_acoustic"
REQUIRED_FILES = ("features.json", "lexicon.json", "tree.json", "transitions.json",
                  "decoder.json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class SpeakerAdaptation:
    """How a speaker-adapted system (tri3b) adapts at test time; ``adaptation.json``.

    Kaldi's ``steps/decode_fmllr.sh``: decode with ``si_model`` (or, without one, the system's
    own model) on the unadapted input, estimate one fMLLR transform per speaker from the best
    paths' pdfs (silence frames weighted by ``silence_weight``); then, ``refinements`` times,
    decode the adapted features with the system's own model and re-estimate each transform
    from those best paths (Kaldi's second estimate); decode the adapted features again. A
    speaker with less than ``min_count`` frames keeps the identity.

    A hybrid on fMLLR features (Kaldi's DNN on tri3b's adapted features) keeps tri3b's two
    GMMs: ``si_model`` decodes the first pass, at ``si_acoustic_scale`` (the GMM's own scale;
    None: the decoder's), and ``fmllr_model`` is the GMM the transforms adapt the features
    to (None: the system's own model, which must then be a GMM).
    """

    kind: str = "fmllr"
    min_count: float = 20.0           # asr.transforms.fmllr.DEFAULT_MIN_COUNT
    iters: int = 40                   # row-update passes of each estimate
    silence_weight: float = 0.01      # of silence frames in the test-time statistics
    si_acoustic_scale: float | None = None
    refinements: int = 1              # re-estimates from adapted passes (decode_fmllr.sh: 1)
    si_model: "AcousticModel | None" = dataclasses.field(default=None, compare=False)
    fmllr_model: "AcousticModel | None" = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.kind != "fmllr":
            raise ValueError(f"speaker adaptation kind {self.kind!r}; expected 'fmllr'")
        if self.min_count < 0 or self.iters < 1 or not 0.0 <= self.silence_weight <= 1.0:
            raise ValueError("adaptation needs min_count >= 0, iters >= 1 and silence_weight "
                             "in [0, 1]")
        if self.refinements < 0:
            raise ValueError(f"refinements must be >= 0, got {self.refinements}")
        if self.si_acoustic_scale is not None and not self.si_acoustic_scale > 0:
            raise ValueError("si_acoustic_scale must be positive (or None: the decoder's)")

    def settings(self) -> dict:
        """The JSON-able settings (everything but the models)."""
        out = {"kind": self.kind, "min_count": self.min_count, "iters": self.iters,
               "silence_weight": self.silence_weight, "refinements": self.refinements}
        if self.si_acoustic_scale is not None:
            out["si_acoustic_scale"] = self.si_acoustic_scale
        return out

    def models(self) -> dict[str, "AcousticModel"]:
        """Sub-directory -> the model saved there (only those set)."""
        return {name: model for name, model in ((SI_MODEL_DIR, self.si_model),
                                                 (FMLLR_MODEL_DIR, self.fmllr_model))
                if model is not None}


@dataclass
class AsrSystem:
    """Front end, lexicon, HMMs and acoustic model of one trained system.

    ``transform`` (optional) maps the pipeline's (T, features.dim) output to the model's
    input, e.g. tri2b's LDA+MLLT matrix (40, 91); see :meth:`model_input`.
    """

    features: FeatureConfig
    lexicon: Lexicon
    tree: ContextTree
    tm: TransitionModel
    model: AcousticModel
    decoding: DecoderConfig
    transform: "FeatureTransform | None" = None
    adaptation: SpeakerAdaptation | None = None

    def __post_init__(self) -> None:
        if self.transform is not None and self.transform.input_dim != self.features.dim:
            raise ValueError(f"a feature transform from {self.transform.input_dim} dimensions "
                             f"cannot follow a pipeline giving {self.features.dim}")
        subs = {} if self.adaptation is None else self.adaptation.models()
        for name, sub in subs.items():
            if sub.num_pdfs != self.model.num_pdfs:
                raise ValueError(f"a model of {sub.num_pdfs} pdfs in {name}/ for a system of "
                                 f"{self.model.num_pdfs}")

    def adapt(self, feats: dict[str, np.ndarray], utt2spk: dict[str, str] | None,
              decoder: Decoder, progress: bool = False
              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Model input (:meth:`model_input`) to what this system's model scores.

        A speaker-independent system returns ``feats`` as they are and no transforms; a
        speaker-adapted one runs the first pass by ``decoder`` and returns the adapted
        features and speaker id -> fMLLR W (D, D+1); see ``asr.adaptation.adapt_features``.
        """
        if self.adaptation is None:
            return feats, {}
        from asr.adaptation import adapt_features
        return adapt_features(self, feats, utt2spk, decoder, progress)

    def model_input(self, raw: dict[str, np.ndarray], utt2spk: dict[str, str] | None = None
                    ) -> dict[str, np.ndarray]:
        """Base features (utt -> (T, features.base_dim), e.g. from ``read_archive``) to what
        the acoustic model scores: ``apply_pipeline`` with this system's settings, then the
        transform. ``utt2spk`` as ``apply_pipeline`` needs it (per-speaker CMVN).

        Returns
        -------
        utt -> (T, D) float32, same keys and order; D is the transform's output dimension,
        or ``features.dim`` without one.
        """
        return self.transformed(apply_pipeline(raw, self.features, utt2spk))

    def transformed(self, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Pipeline output (utt -> (T, features.dim)) through the transform, if any."""
        if self.transform is None:
            return feats
        return {utt: self.transform.apply(mat).astype(np.float32, copy=False)
                for utt, mat in feats.items()}

    def save(self, directory: str | Path) -> None:
        """Write the model directory atomically."""
        with atomic_dir(directory) as tmp:
            write_json(tmp / "features.json", dataclasses.asdict(self.features))
            write_json(tmp / "lexicon.json", self.lexicon.to_dict())
            write_json(tmp / "tree.json", self.tree.to_dict())
            write_json(tmp / "transitions.json", self.tm.to_dict())
            write_json(tmp / "decoder.json", dataclasses.asdict(self.decoding))
            if self.transform is not None:
                self.transform.save(tmp / TRANSFORM_FILE)
            if self.adaptation is not None:
                subs = self.adaptation.models()
                settings = self.adaptation.settings()
                if any(sub.model_type != self.model.model_type for sub in subs.values()):
                    settings["model_types"] = {name: sub.model_type
                                               for name, sub in subs.items()}
                write_json(tmp / ADAPTATION_FILE, settings)
                for name, sub in subs.items():
                    (tmp / name).mkdir()
                    sub.save(tmp / name)
            (tmp / "acoustic").mkdir()
            self.model.save(tmp / "acoustic")
            files = sorted(p for p in tmp.rglob("*") if p.is_file())
            write_json(tmp / "manifest.json", {
                "format_version": FORMAT_VERSION,
                "model_type": self.model.model_type,
                "files": {p.relative_to(tmp).as_posix(): _sha256(p) for p in files}})

    @classmethod
    def load(cls, directory: str | Path) -> "AsrSystem":
        """Read a model directory written by ``save``, checking its manifest first.

        Raises
        ------
        ModelError
            naming the file that is missing, altered (checksum), of another format version,
            or inconsistent with the others.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise ModelError(directory, "model directory not found")
        manifest_path = directory / "manifest.json"
        manifest = read_json(manifest_path)
        if not isinstance(manifest, dict):
            raise ModelError(manifest_path, f"expected a JSON object, got "
                             f"{type(manifest).__name__}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ModelError(manifest_path, f"format version "
                             f"{manifest.get('format_version')!r}, expected {FORMAT_VERSION}")
        files = manifest.get("files")
        if not isinstance(files, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise ModelError(manifest_path, "expected 'files': {relative path: sha256}")
        unlisted = sorted(set(REQUIRED_FILES) - set(files))
        if unlisted or not any(name.startswith("acoustic/") for name in files):
            first = unlisted[0] if unlisted else "acoustic/"
            raise ModelError(manifest_path, f"does not list {first}; expected every file of "
                             "the model directory with its sha256")
        for name, what in ((TRANSFORM_FILE, "feature transform"),
                           (ADAPTATION_FILE, "speaker adaptation")):
            if (directory / name).exists() and name not in files:
                raise ModelError(directory / name, f"not listed in manifest.json; a {what} "
                                 "must be listed with its sha256")
        for name, digest in sorted(files.items()):
            parts = PurePosixPath(name).parts
            if PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name:
                raise ModelError(manifest_path, f"file name {name!r} points outside the model "
                                 "directory")
            path = directory / name
            if not path.is_file():
                raise ModelError(path, "missing model file listed in manifest.json")
            if _sha256(path) != digest:
                raise ModelError(path, "checksum does not match manifest.json: the file was "
                                 "altered or damaged")
        try:
            features = FeatureConfig(**read_json(directory / "features.json"))
            lexicon = Lexicon.from_dict(read_json(directory / "lexicon.json"))
            tree = ContextTree.from_dict(read_json(directory / "tree.json"))
            tm = TransitionModel.from_dict(read_json(directory / "transitions.json"))
            decoding = DecoderConfig(**read_json(directory / "decoder.json"))
        except (TypeError, KeyError, ValueError) as exc:
            raise ModelError(directory, f"inconsistent model files: {exc}") from None
        transform = None
        if TRANSFORM_FILE in files:
            from asr.transforms import FeatureTransform
            transform = FeatureTransform.load(directory / TRANSFORM_FILE, input_dim=features.dim)
        model = model_class(manifest.get("model_type", "")).load(directory / "acoustic")
        if model.num_pdfs != tree.num_pdfs:
            raise ModelError(directory, f"acoustic model has {model.num_pdfs} pdfs, the tree "
                             f"{tree.num_pdfs}")
        adaptation = None
        if ADAPTATION_FILE in files:
            settings = read_json(directory / ADAPTATION_FILE)
            types = settings.pop("model_types", {}) if isinstance(settings, dict) else {}
            try:
                adaptation = SpeakerAdaptation(**settings)
            except (TypeError, ValueError) as exc:
                raise ModelError(directory / ADAPTATION_FILE, f"bad adaptation settings: "
                                 f"{exc}") from None
            for name, field in ((SI_MODEL_DIR, "si_model"), (FMLLR_MODEL_DIR, "fmllr_model")):
                if not any(f.startswith(name + "/") for f in files):
                    continue
                sub = model_class(types.get(name, manifest.get("model_type", ""))).load(
                    directory / name)
                if sub.num_pdfs != tree.num_pdfs:
                    raise ModelError(directory / name, f"the model has {sub.num_pdfs} pdfs, "
                                     f"the tree {tree.num_pdfs}")
                setattr(adaptation, field, sub)
        return cls(features, lexicon, tree, tm, model, decoding, transform, adaptation)

    def graph(self, cfg: DecoderConfig | None = None, base_dir: Path | None = None,
              cache: Path | None = None):
        """This system's HCLG for ``cfg`` (default: the saved settings); see
        ``asr.decoder.decoding_graph``."""
        return decoding_graph(self.lexicon, self.tree, self.tm, cfg or self.decoding,
                              base_dir, cache)

    def decoder(self, cfg: DecoderConfig | None = None, base_dir: Path | None = None,
                cache: Path | None = None) -> Decoder:
        """A decoder over this system's graph (see :meth:`graph`) for ``cfg``."""
        cfg = cfg or self.decoding
        return Decoder(self.graph(cfg, base_dir, cache), cfg)
