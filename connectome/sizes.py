"""Counts as users write them: 1M, 250k, 12345, 1.5M, 20%."""

import re

from connectome.errors import ConnectomeError

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgG%]?)\s*$")


def parse_count(text: str, total: int) -> int:
    """An exact integer count of weights, `total` being what a percentage refers to."""
    m = _PATTERN.match(str(text).replace("_", ""))
    if not m:
        raise ConnectomeError(f"malformed count {text!r}: use e.g. 12345, 250k, 1M, 1.5M or 20%")
    number, suffix = float(m.group(1)), m.group(2).lower()
    value = number * total / 100 if suffix == "%" else number * _SUFFIX[suffix]
    count = int(round(value))
    if suffix != "%" and abs(value - count) > 1e-9:
        raise ConnectomeError(f"count {text!r} is not a whole number of weights")
    if count <= 0:
        raise ConnectomeError(f"count {text!r} must be positive")
    if count > total:
        raise ConnectomeError(f"count {text!r} ({count:,}) exceeds the {total:,} prunable weights")
    return count

