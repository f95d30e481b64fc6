"""Feature settings: Kaldi's front-end options plus the post-processing pipeline.

Names and defaults follow Kaldi's ``compute-mfcc-feats`` / ``compute-fbank-feats``
(``--frame-length``, ``--num-mel-bins``, ...), except ``dither`` (0 here, so features are
reproducible by default) and ``sample_rate`` (8 kHz, the rate of the project's corpora).
Only plain types, so the settings fill from a TOML table and save with
``dataclasses.asdict`` as JSON.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("mfcc", "fbank")
MEL_CONVENTIONS = ("kaldi", "htk", "slaney")
WINDOWS = ("povey", "hamming", "hanning", "rectangular", "blackman")
CMVN_MODES = ("none", "utterance", "speaker")
FLOAT_FIELDS = ("frame_length_ms", "frame_shift_ms", "dither", "preemphasis", "low_freq",
                "high_freq", "cepstral_lifter", "energy_floor")

# Bounds far beyond any speech front end, so that a mistyped setting is refused at once
# instead of asking for gigabytes of filterbank or delta filters.
MAX_SAMPLE_RATE = 768_000       # Hz
MAX_WINDOW_SIZE = 1 << 15       # samples per frame
MAX_MEL_BINS = 512
MAX_DELTAS = 4
MAX_CONTEXT = 100               # delta_window, splice_left, splice_right


@dataclass
class FeatureConfig:
    """Settings of the feature front end and of the post-processing applied before a model.

    Front end (Kaldi's names):

    kind : ``"mfcc"`` or ``"fbank"`` (log mel filterbank energies).
    sample_rate : Hz; audio at another rate is refused, not resampled.
    frame_length_ms, frame_shift_ms : analysis window and hop.
    dither : standard deviation of Gaussian noise added to each frame (int16 scale); 0 = off.
    seed : seed of the dither noise; each utterance restarts from it, so output is reproducible.
    preemphasis : coefficient of ``x[i] -= c * x[i-1]`` (``x[0] -= c * x[0]``).
    remove_dc_offset : subtract each frame's mean.
    window : ``"povey"``, ``"hamming"``, ``"hanning"``, ``"rectangular"`` or ``"blackman"``.
    round_to_power_of_two : zero-pad each frame to a power of two before the FFT.
    snip_edges : only frames that fit inside the signal; if False, reflect the signal at the
        ends and output ``round(num_samples / frame_shift)`` frames.
    num_mel_bins : triangular mel filters.
    mel_convention : the mel filterbank: ``"kaldi"`` (Kaldi's ``MelBanks``), or librosa's
        ``"htk"`` or ``"slaney"`` filters (``librosa.filters.mel`` with ``htk=True, norm=None``
        or with its defaults, Slaney's scale and unit-area filters). Only the filterbank
        changes; the log, DCT and lifter stay Kaldi's.
    low_freq, high_freq : filterbank edges in Hz; ``high_freq <= 0`` is an offset from Nyquist.
    num_ceps : cepstra kept (MFCC only).
    cepstral_lifter : lifter coefficient ``Q`` (MFCC only; 0 = off).
    use_energy : MFCC: log energy replaces C0; fbank: log energy is prepended as column 0.
    raw_energy : energy measured before pre-emphasis and windowing.
    energy_floor : floor on the energy (absolute, not log); 0 = none.
    use_log_fbank : fbank: log of the mel energies (False: the energies themselves).

    Post-processing (``apply_pipeline``), in this order:

    cmvn : cepstral mean (and variance) normalisation per ``"utterance"``, per ``"speaker"``
        (statistics pooled over the speaker's utterances) or ``"none"``.
    cmvn_variance : also scale every dimension to unit variance.
    deltas : 0 none, 1 adds Δ, 2 adds Δ and ΔΔ (Kaldi's ``add-deltas --delta-order``).
    delta_window : ``N`` of the regression window ``-N..N`` (Kaldi's ``--delta-window``).
    splice_left, splice_right : frames of context stacked on each frame (``splice-feats``).
    """

    kind: str = "mfcc"
    sample_rate: int = 8000
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0
    seed: int = 0
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    window: str = "povey"
    round_to_power_of_two: bool = True
    snip_edges: bool = True
    num_mel_bins: int = 23
    mel_convention: str = "kaldi"
    low_freq: float = 20.0
    high_freq: float = 0.0
    num_ceps: int = 13
    cepstral_lifter: float = 22.0
    use_energy: bool = False
    raw_energy: bool = True
    energy_floor: float = 0.0
    use_log_fbank: bool = True
    deltas: int = 2
    delta_window: int = 2
    cmvn: str = "utterance"
    cmvn_variance: bool = False
    splice_left: int = 0
    splice_right: int = 0

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        for name in FLOAT_FIELDS:
            value = getattr(self, name)
            check(math.isfinite(value), f"{name} must be a finite number, got {value}")
        check(0 < self.sample_rate <= MAX_SAMPLE_RATE,
              f"sample_rate must be in [1, {MAX_SAMPLE_RATE}] Hz, got {self.sample_rate}")
        check(self.kind in KINDS, f"kind must be one of {KINDS}, got {self.kind!r}")
        check(self.window in WINDOWS, f"window must be one of {WINDOWS}, got {self.window!r}")
        check(self.cmvn in CMVN_MODES, f"cmvn must be one of {CMVN_MODES}, got {self.cmvn!r}")
        check(self.mel_convention in MEL_CONVENTIONS,
              f"mel_convention must be one of {MEL_CONVENTIONS}, got {self.mel_convention!r}")
        check(self.frame_shift_ms > 0 and self.frame_length_ms > 0,
              f"frame_length_ms and frame_shift_ms must be positive, got "
              f"{self.frame_length_ms} and {self.frame_shift_ms}")
        check(self.window_size >= 2, f"frame_length_ms={self.frame_length_ms} gives "
              f"{self.window_size} samples at {self.sample_rate} Hz; at least 2 are needed")
        check(self.window_shift >= 1, f"frame_shift_ms={self.frame_shift_ms} gives no whole "
              f"sample at {self.sample_rate} Hz")
        check(self.window_size <= MAX_WINDOW_SIZE, f"frame_length_ms={self.frame_length_ms} "
              f"gives {self.window_size} samples at {self.sample_rate} Hz; at most "
              f"{MAX_WINDOW_SIZE} are supported")
        check(self.padded_size % 2 == 0, f"a frame of {self.window_size} samples is odd; set "
              "round_to_power_of_two = true or change frame_length_ms")
        check(self.dither >= 0, f"dither must be >= 0, got {self.dither}")
        check(0.0 <= self.preemphasis <= 1.0,
              f"preemphasis must be in [0, 1], got {self.preemphasis}")
        limit = min(MAX_MEL_BINS, self.padded_size // 2)
        check(3 <= self.num_mel_bins <= limit,
              f"num_mel_bins must be in [3, {limit}], got {self.num_mel_bins} (at most "
              f"{MAX_MEL_BINS}; more than half the {self.padded_size}-point FFT would leave a "
              "bin with no FFT bin)")
        nyquist = 0.5 * self.sample_rate
        check(0.0 <= self.low_freq < nyquist,
              f"low_freq must be in [0, {nyquist}) Hz, got {self.low_freq}")
        check(self.low_freq < self.high_freq_hz <= nyquist,
              f"high_freq={self.high_freq} gives {self.high_freq_hz} Hz; it must lie in "
              f"(low_freq={self.low_freq}, {nyquist}] Hz")
        check(self.kind != "mfcc" or 1 <= self.num_ceps <= self.num_mel_bins,
              f"num_ceps must be in [1, num_mel_bins={self.num_mel_bins}], got {self.num_ceps}")
        check(self.cepstral_lifter >= 0,
              f"cepstral_lifter must be >= 0, got {self.cepstral_lifter}")
        check(self.energy_floor >= 0, f"energy_floor must be >= 0, got {self.energy_floor}")
        check(0 <= self.deltas <= MAX_DELTAS,
              f"deltas must be in [0, {MAX_DELTAS}], got {self.deltas}")
        check(1 <= self.delta_window <= MAX_CONTEXT,
              f"delta_window must be in [1, {MAX_CONTEXT}], got {self.delta_window}")
        check(0 <= self.splice_left <= MAX_CONTEXT and 0 <= self.splice_right <= MAX_CONTEXT,
              f"splice_left and splice_right must be in [0, {MAX_CONTEXT}], got "
              f"{self.splice_left} and {self.splice_right}")
        # Imported here: the front end imports this module.
        from asr.features.frontend import librosa_mel_banks, mel_banks

        banks_args = (self.num_mel_bins, self.padded_size, float(self.sample_rate),
                      float(self.low_freq), float(self.high_freq))
        if self.mel_convention == "kaldi":      # ValueError if a bin is empty
            mel_banks(*banks_args)
        else:
            librosa_mel_banks(self.mel_convention, *banks_args)

    @property
    def window_size(self) -> int:
        """Samples per frame (Kaldi's ``WindowSize()``)."""
        return int(self.sample_rate * 0.001 * self.frame_length_ms)

    @property
    def window_shift(self) -> int:
        """Samples between frame starts (Kaldi's ``WindowShift()``)."""
        return int(self.sample_rate * 0.001 * self.frame_shift_ms)

    @property
    def padded_size(self) -> int:
        """FFT length: the frame zero-padded to a power of two, or the frame itself."""
        size = self.window_size
        return 1 << (size - 1).bit_length() if self.round_to_power_of_two else size

    @property
    def high_freq_hz(self) -> float:
        """Upper filterbank edge in Hz (``high_freq <= 0`` counts back from Nyquist)."""
        nyquist = 0.5 * self.sample_rate
        return self.high_freq + nyquist if self.high_freq <= 0.0 else float(self.high_freq)

    @property
    def base_dim(self) -> int:
        """Columns of ``compute_features``' output."""
        if self.kind == "mfcc":
            return self.num_ceps
        return self.num_mel_bins + int(self.use_energy)

    @property
    def dim(self) -> int:
        """Columns after ``apply_pipeline``."""
        return self.base_dim * (self.deltas + 1) * (self.splice_left + self.splice_right + 1)
