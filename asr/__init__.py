"""asr: the classic speech recognition pipeline in Python.

audio -> features -> acoustic model -> (frames x pdfs) log-likelihoods -> Viterbi decoder -> words -> WER
"""
from asr.errors import AsrError, DataError, AudioError, ModelError, SettingsError

__version__ = "0.1.0"
__all__ = ["AsrError", "DataError", "AudioError", "ModelError", "SettingsError", "__version__"]
