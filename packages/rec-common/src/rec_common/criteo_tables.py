"""Criteo table sizes: the presets every tool accepts as ``--table-sizes kaggle|terabyte|FILE``.

The Kaggle and Terabyte counts are the per-feature distinct-value counts of the full
datasets as published with Meta's DLRM reference (``day_fea_count``); MLPerf DLRMv2 caps the
Terabyte counts at 40M rows and adds a multi-hot size per feature.
"""

from __future__ import annotations

import json
from pathlib import Path

NUM_DENSE = 13
NUM_SPARSE = 26
NUM_FIELDS = 1 + NUM_DENSE + NUM_SPARSE  # label, I1..I13, C1..C26

DENSE_NAMES = tuple(f"I{i}" for i in range(1, NUM_DENSE + 1))
SPARSE_NAMES = tuple(f"C{i}" for i in range(1, NUM_SPARSE + 1))
FIELD_NAMES = ("label", *DENSE_NAMES, *SPARSE_NAMES)

KAGGLE_TABLE_SIZES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip

TERABYTE_TABLE_SIZES = (
    227605432, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 130229467, 3067956, 405282, 10,
    2209, 11938, 155, 4, 976, 14, 292775614, 40790948, 187188510, 590152, 12973, 108, 36,
)  # fmt: skip

MLPERF_ROW_CAP = 40_000_000
MLPERF_TABLE_SIZES = tuple(min(n, MLPERF_ROW_CAP) for n in TERABYTE_TABLE_SIZES)
MLPERF_MULTI_HOT_SIZES = (
    3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1,
)  # fmt: skip

PRESETS = {
    "kaggle": KAGGLE_TABLE_SIZES,
    "terabyte": TERABYTE_TABLE_SIZES,
    "mlperf": MLPERF_TABLE_SIZES,
}


def resolve_table_sizes(spec: str | Path | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """Turn ``kaggle``, ``terabyte``, ``mlperf``, a file or a list into 26 positive sizes.

    A file holds either a JSON list of 26 integers, a JSON object with a ``table_sizes``
    list (a ``meta.json`` written by ``rec_common.criteo`` qualifies), or 26 integers
    separated by commas or whitespace.

    >>> resolve_table_sizes("kaggle")[:3]
    (1460, 583, 10131227)
    """
    if isinstance(spec, (list, tuple)):
        sizes = tuple(spec)
        source = "the given list"
    elif str(spec) in PRESETS:
        return PRESETS[str(spec)]
    else:
        path = Path(spec)
        if not path.is_file():
            raise ValueError(
                f"table sizes {str(spec)!r}: expected one of {', '.join(PRESETS)} or a file "
                "holding 26 integers, but no such file exists"
            )
        text = path.read_text()
        source = str(path)
        try:
            data = json.loads(text)
        except ValueError:
            data = text.replace(",", " ").split()
        if isinstance(data, dict):
            data = data.get("table_sizes")
        if not isinstance(data, list):
            raise ValueError(f"table sizes in {source}: expected a list of {NUM_SPARSE} integers")
        try:
            sizes = tuple(int(x) for x in data)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"table sizes in {source}: not all entries are integers ({exc})"
            ) from None
    if len(sizes) != NUM_SPARSE:
        raise ValueError(
            f"table sizes from {source}: expected {NUM_SPARSE} sizes, got {len(sizes)}"
        )
    for i, n in enumerate(sizes):
        if int(n) < 1:
            raise ValueError(
                f"table sizes from {source}: {SPARSE_NAMES[i]} has size {n}, expected >= 1"
            )
    return tuple(int(n) for n in sizes)
