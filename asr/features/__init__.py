from asr.features.config import FeatureConfig
from asr.features.frontend import compute_features, compute_features_batch
