"""Keyed pseudo-random orders that are the same in every process, on every machine, in every version.

Pre-training data orders must be pure functions of the seed (a resumed or re-launched run reads
exactly the same images), so nothing here uses ``hash``, ``random`` or numpy's generators, whose
streams may change between releases: :func:`mix` is BLAKE2b over the integers, :func:`permute` a
Feistel network, and :func:`keyed_order` a sort by SplitMix64 hashes (vectorised, for whole lists).
"""

from __future__ import annotations

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix(*values: int) -> int:
    """A 64-bit hash of integers that is the same in every process, unlike ``hash``."""
    data = b"".join(v.to_bytes(16, "little", signed=True) for v in values)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def permute(index: int, n: int, key: int) -> int:
    """Position ``index`` of a keyed pseudo-random permutation of ``range(n)``, without materialising it.

    A 4-round Feistel network is a bijection on ``range(4**half) >= n``; re-applying it until the
    value falls below ``n`` (cycle walking, under four rounds on average) restricts it to ``range(n)``.
    """
    half = max(1, ((n - 1).bit_length() + 1) // 2)
    mask = (1 << half) - 1
    value = index
    while True:
        left, right = value >> half, value & mask
        for round_number in range(4):
            left, right = right, left ^ (mix(key, round_number, right) & mask)
        value = (left << half) | right
        if value < n:
            return value


def keyed_order(n: int, key: int) -> np.ndarray:
    """A keyed pseudo-random permutation of ``range(n)`` as an int64 array: ``range(n)`` sorted by
    the SplitMix64 hash of ``key``'s stream at each index (ties, vanishingly rare, by index)."""
    with np.errstate(over="ignore"):
        z = np.uint64(key % 2**64) + (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return np.argsort(z, kind="stable").astype(np.int64)
