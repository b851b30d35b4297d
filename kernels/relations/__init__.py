"""Relation and feature-matching losses (reference PyTorch; see :mod:`.reference`).

* :func:`rkd_distance_loss`, :func:`rkd_angle_loss` — RKD (Park et al. 2019) between samples;
* :func:`normalized_mse` — PKD's patient loss on L2-normalised features;
* :func:`hint_mse` — FitNets' hint loss (masked mean squared error);
* :func:`infonce_with_negatives` — InfoNCE with in-batch plus queued negatives;
* :func:`pairwise_distances` — the Euclidean distance matrix RKD-D is built on.
"""

from kdkit.kernels.relations.reference import (
    hint_mse,
    infonce_with_negatives,
    normalized_mse,
    pairwise_distances,
    rkd_angle_loss,
    rkd_distance_loss,
)

__all__ = [
    "hint_mse",
    "infonce_with_negatives",
    "normalized_mse",
    "pairwise_distances",
    "rkd_angle_loss",
    "rkd_distance_loss",
]
