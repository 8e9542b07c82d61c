"""Speech features: Whisper log-mel (batch-invariant), computed on the fly or dumped to ark/scp."""
from partlib.features.compute import (
    FEATURE_TYPES,
    MEL_BINS,
    FeatsType,
    check_feature_config,
    check_mel_bins,
    check_waveform,
    compute_batch,
    compute_features,
    read_feats_type,
    write_feats_type,
)
from partlib.features.whisper_mel import WhisperMel, num_frames

__all__ = [
    "FEATURE_TYPES",
    "MEL_BINS",
    "FeatsType",
    "WhisperMel",
    "check_feature_config",
    "check_mel_bins",
    "check_waveform",
    "compute_batch",
    "compute_features",
    "num_frames",
    "read_feats_type",
    "write_feats_type",
]
