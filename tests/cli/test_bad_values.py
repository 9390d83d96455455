"""Generated bad values for every prune setting: one line on stderr, exit 2, nothing written."""

import math

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectome.cli import main
from connectome.pruning.settings import PruneSettings

SPECS = {s.name: s for s in PruneSettings.specs() if not s.meta["argument"] and s.kind in (int, float)}


def bad_number(spec):
    """Values a flag of this numeric setting must refuse: text, non-finite numbers, out of range."""
    m = spec.meta
    out = [st.sampled_from(["abc", "1,5", "", "0x10", "--", "1e", "☃"])]
    if spec.kind is float:
        out.append(st.sampled_from(["inf", "-inf", "nan", "1e400"]))
    else:
        out.append(st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: v != int(v)).map(repr))
        out.append(st.sampled_from([str(2**63), str(-2**63 - 1), "1" + "0" * 400]))  # past any int64
    low = m["minimum"] if m["minimum"] is not None else m["above"]
    if low is not None:
        below = st.floats(max_value=low, exclude_max=m["minimum"] is not None, allow_nan=False, allow_infinity=False,
                          min_value=-1e12)
        out.append((below.map(math.floor) if spec.kind is int else below).filter(
            lambda v: v < low or (m["above"] is not None and v <= low)).map(repr))
    high = m["maximum"] if m["maximum"] is not None else m["below"]
    if high is not None:
        above = st.floats(min_value=high, exclude_min=m["maximum"] is not None, max_value=1e12, allow_nan=False)
        out.append(above.filter(lambda v: v > high or (m["below"] is not None and v >= high)).map(repr))
        # The far end: what a float or a Python int can hold, and past what C's int64 can.
        out.append(st.sampled_from(["1e300", "1.7976931348623157e308"] if spec.kind is float else
                                   [str(2**63), "99999999999999999999", str(10**40)]))
    return st.one_of(*out)


cases = st.sampled_from(sorted(SPECS)).flatmap(lambda name: st.tuples(st.just(name), bad_number(SPECS[name])))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases)
def test_bad_numbers_are_refused_in_one_line(tmp_path, case):
    name, value = case
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--remove", "10%", f"--{name.replace('_', '-')}={value}",
                                  "--out", str(out), "--quiet"])
    assert r.exit_code == 2, (name, value, r.output)
    assert len(r.output.strip().splitlines()) == 1 and f"--{name.replace('_', '-')}" in r.output
    assert not out.exists()


def not_a_count(text: str) -> bool:
    from connectome.sizes import _PATTERN
    return not _PATTERN.match(text.replace("_", "")) and "\0" not in text and not text.startswith("-")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.text(min_size=1).filter(not_a_count),
                       st.sampled_from(["0", "-1", "101%", "1.5", "1e9", "0%", "%", "300k", "2M", "9" * 30, "1e300",
                                       "99999999999999999999%"])))
def test_bad_counts_are_refused_in_one_line(tmp_path_factory, value):
    out = tmp_path_factory.mktemp("count") / "run"  # a fresh folder per example
    r = CliRunner().invoke(main, ["prune", "lenet_300_100", f"--remove={value}", "--out", str(out), "--quiet"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, (value, r.output)
    assert not out.exists()
