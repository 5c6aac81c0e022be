"""sigrid_hash: the one definition both paths follow, in plain Python integers.

TorchArrow / Velox ``sigrid_hash(value, salt, max_value)``::

    twang_mix64(k)       Thomas Wang's 64-bit mix (folly::hash::twang_mix64), all mod 2**64
    hash_128_to_64(u, l) CityHash's Hash128to64 with kMul = 0x9ddfea08eb382d69
    h = hash_128_to_64(salt, twang_mix64(value)) read as a signed int64
    sigrid_hash = 0 if max_value == 1 else h mod max_value   (floor modulo, in [0, max_value))

Velox computes the modulo with a precomputed multiplier and shift (division-free); that is the
floor modulo above, so we state the result, not the trick. Inputs are int64; negative values
are taken as their two's complement bits. The published vectors (Velox's SigridHashTest, salt 0,
max_value 100, values 1..16) are :data:`VELOX_TEST_VECTORS`.

>>> [sigrid_hash(v, 0, 100) for v in (1, 2, 3)]
[60, 54, 54]
"""

from __future__ import annotations

MASK64 = (1 << 64) - 1
K_MUL = 0x9DDFEA08EB382D69

# (value, salt, max_value) -> expected, from Velox's sigrid_hash unit test (values 1..16).
VELOX_TEST_VECTORS = tuple(
    ((v, 0, 100), e)
    for v, e in zip(range(1, 17), (60, 54, 54, 9, 4, 91, 11, 67, 79, 2, 25, 92, 98, 83, 66, 2))
)


def twang_mix64(key: int) -> int:
    k = key & MASK64
    k = ((~k) + (k << 21)) & MASK64
    k ^= k >> 24
    k = (k + (k << 3) + (k << 8)) & MASK64
    k ^= k >> 14
    k = (k + (k << 2) + (k << 4)) & MASK64
    k ^= k >> 28
    return (k + (k << 31)) & MASK64


def hash_128_to_64(upper: int, lower: int) -> int:
    a = ((lower ^ upper) * K_MUL) & MASK64
    a ^= a >> 47
    b = ((upper ^ a) * K_MUL) & MASK64
    b ^= b >> 47
    return (b * K_MUL) & MASK64


def sigrid_hash(value: int, salt: int, max_value: int) -> int:
    """One value, by the definition in the module docstring."""
    if max_value < 1:
        raise ValueError(f"sigrid_hash: max_value must be >= 1, got {max_value}")
    if max_value == 1:
        return 0
    h = hash_128_to_64(salt & MASK64, twang_mix64(value))
    signed = h - (1 << 64) if h >> 63 else h
    return signed % max_value
