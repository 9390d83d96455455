"""Counts as users write them: 1M, 250k, 12345, 1.5M, 20%."""

import re

from connectome.errors import ConnectomeError
from connectome.settings import shown

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
# ASCII only: \d would also match other scripts' digits, and float() reads them ("٥٠%" as 50%).
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgG%]?)\s*$", re.ASCII)
# No count needs more characters; a longer one would reach float() as infinity.
_LONGEST = 40
_EXAMPLES = "use e.g. 12345, 250k, 1M, 1.5M or 20% (ASCII digits)"


def parse_count(text: str, total: int) -> int:
    """An exact integer count of weights, `total` being what a percentage refers to."""
    text = str(text)
    m = _PATTERN.match(text.replace("_", "")) if len(text) <= _LONGEST else None
    if not m:
        raise ConnectomeError(f"malformed count {shown(text)}: {_EXAMPLES}")
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
