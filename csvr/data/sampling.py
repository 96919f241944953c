"""TSN segment sampling over a video's GOPs.

A video of `num_gops` GOPs is cut into K equal segments. Training draws one random GOP in
each segment; testing takes `views` evenly spaced GOPs in each segment so that every view
(v) spans the whole video. Both sample with replacement when there are too few GOPs.
"""

from __future__ import annotations

import math

import numpy as np


def _check(num_gops: int, k: int) -> None:
    if num_gops < 1:
        raise ValueError(f"a video needs at least one GOP, got num_gops={num_gops}")
    if k < 1:
        raise ValueError(f"need at least one segment, got {k}")


def sample_train(num_gops: int, K: int, rng: np.random.Generator) -> list[int]:
    """K GOP indices, one uniformly drawn in each of K equal segments (sorted).

    With num_gops >= K segment k covers GOPs [k*n//K, (k+1)*n//K); with fewer GOPs the
    fractional segment [k*n/K, (k+1)*n/K) picks the GOP it overlaps (repeats allowed).
    """
    _check(num_gops, K)
    n = num_gops
    if n >= K:
        return [int(rng.integers(k * n // K, (k + 1) * n // K)) for k in range(K)]
    return [min(n - 1, int(math.floor((k + rng.random()) * n / K))) for k in range(K)]


def sample_test(num_gops: int, K: int, views: int = 1) -> list[int]:
    """views*K GOP indices, view-major: index v*K + k is segment k at offset v.

    The S = views*K positions are evenly spaced at the centres of S equal slots; slot
    k*views + v (segment k, offset v) goes to output index v*K + k, so view v alone is a
    TSN sample of the whole video. views=1 gives the centre GOP of each segment.
    """
    _check(num_gops, K)
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    s = views * K
    out = [0] * s
    for k in range(K):
        for v in range(views):
            pos = int(math.floor((k * views + v + 0.5) * num_gops / s))
            out[v * K + k] = min(pos, num_gops - 1)
    return out


def num_views(test_segments: int, K: int) -> int:
    """V = ceil(test_segments / K): how many K-segment views make up the test segments."""
    return max(1, math.ceil(test_segments / K))
