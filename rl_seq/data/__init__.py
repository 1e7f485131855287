"""Data layer: ragged episodes, loading, segment sampling, scores, dataset making."""

from rl_seq.data.builtin import BUILTIN, make_builtin
from rl_seq.data.episodes import Episodes, normalized_score
from rl_seq.data.loading import DatasetNotFoundError, load_episodes, load_minari, local_datasets
from rl_seq.data.sampler import SegmentSampler

__all__ = ["Episodes", "SegmentSampler", "normalized_score", "load_episodes", "load_minari",
           "local_datasets", "DatasetNotFoundError", "BUILTIN", "make_builtin"]
