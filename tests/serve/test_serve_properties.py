"""Property test of job validation, with the app in-process (no server, no scheduler): for every
field a job may carry, generated bad values (wrong types, non-finite numbers, values out of the
field's range or choices, NUL characters) are refused with a 4xx that names the field, and no job
is stored; the values at the edges of each range, and each choice, are accepted.

What each field accepts is written out below, not read from the settings' metadata: the validator
reads that metadata, so values built from it would follow a wrong bound instead of catching it."""

import json
import math
import re
from dataclasses import dataclass

import pytest

pytest.importorskip("fastapi")
hypothesis = pytest.importorskip("hypothesis")

from conftest import write_idx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from connectome.pruning.settings import PruneSettings  # noqa: E402
from connectome.serve.app import create_app  # noqa: E402
from connectome.serve.spec import Policy  # noqa: E402

TOKEN = "t" * 32
# Every field a job may carry: its type ("?": null allowed, "list": a list of them) and, for numbers,
# the interval it accepts ("[" and "]" include the end, "(" and ")" exclude it; an empty end: no bound).
ACCEPTS = {
    "model": "str", "remove": "str", "data": "str?", "weights": "str?", "weights_file": "str?",
    "preprocess": "str list", "include": "str list", "exclude": "str list", "pattern": "str?",
    "device": "str", "cache_calib": "str?",
    "method": ["greedy", "learned", "one-shot"],
    "score": ["magnitude", "random", "taylor", "fisher", "dloss", "connectome", "wanda", "wanda_row"],
    # The spelling before method and score: read into them, never held (connectome.pruning.settings);
    # None (a name list that starts with it): null is accepted.
    "criterion": [None, "learned", "magnitude", "random", "taylor", "fisher", "dloss", "connectome", "wanda", "wanda_row"],
    "confidence": "float [0, )", "calib_samples": "int [4, )", "accept_fraction": "float (0, 1)",
    "eval_samples": "int? [1, )", "batch_size": "int [1, )",
    "step": "float (0, 1]", "max_step": "float (0, 1]", "min_step": "float (0, 1]",
    "grow": "float [1, )", "shrink": "float (0, 1)", "tolerance": "float [0, )", "loss_budget": "float [0, )",
    "max_top1_drop": "float? [0, )", "label_smoothing": "float [0, 1)", "restore_cycles": "int [0, )",
    "restore_fraction": "float (0, 1]", "seed": "int [0, 2147483647]", "ratio_hold": "float [0, )",
    "unit_share": "float? (0, 1]", "eval_every": "int [1, )", "workers": "int? [0, 2]",
    "keep_descents": "bool", "descent_keeps_top1": "bool", "unknown_last": "bool", "headroom": "bool",
    "pace": "bool", "amp": "bool", "compile": "bool", "channels_last": "bool?",
    "learn_lr": "float (0, 1]", "learn_epochs": "float (0, 1000]", "learn_points": "int [1, )",
    "learn_select": "bool", "learn_check": "float (0, 1000]", "learn_patience": "int [1, 1000]",
    "learn_augment": "bool?", "learn_distill": "float [0, 1]", "learn_accept": ["pareto", "paired"],
    "learn_restart": "bool",
}
# Set together to one value when one of them is tried at an edge: min_step <= step <= max_step.
STEPS = ("min_step", "step", "max_step")
# Open ends tried further in than the nearest float: accept_fraction just below 1 leaves the
# statistics no calibration samples, which another check refuses.
INSIDE = {("accept_fraction", 1): 0.999}


@dataclass(frozen=True)
class Field:
    name: str
    kind: type
    optional: bool = False
    is_list: bool = False
    low: float | None = None
    low_in: bool = True  # the low end itself is accepted
    high: float | None = None
    high_in: bool = True
    choices: tuple | None = None


def field(name: str, accepts) -> Field:
    if isinstance(accepts, list):
        return Field(name, str, optional=None in accepts, choices=tuple(a for a in accepts if a is not None))
    m = re.fullmatch(r"(str|bool|int|float)(\?)?( list)?(?: ([\[(])(\S*), (\S*)([\])]))?", accepts)
    kind, optional, is_list, lo_mark, low, high, hi_mark = m.groups()
    number = int if kind == "int" else float
    return Field(name, {"str": str, "bool": bool, "int": int, "float": float}[kind], bool(optional), bool(is_list),
                 number(low) if low else None, lo_mark == "[", number(high) if high else None, hi_mark == "]")


FIELDS = {name: field(name, accepts) for name, accepts in ACCEPTS.items()}
SERVER_KEYS = ("command", "nproc_per_node", "recipe")
# Strings that some fields accept as valid whatever their text is not generated for them; only
# wrong types, NUL characters and (for choices) names outside the choices are.
OTHER = st.one_of(st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.just({}))
NUL_TEXT = st.text(max_size=8).map(lambda t: t + "\0")


def test_every_field_a_job_may_carry_is_listed_here():
    assert sorted(s.name for s in PruneSettings.specs() if s.meta["server"]) == sorted(ACCEPTS)


def bad_scalar(f: Field) -> st.SearchStrategy:
    """Values that the field refuses as one scalar (a list's item)."""
    if f.kind is bool:
        options = [st.integers(), st.floats(), st.text(max_size=5)]
    elif f.kind is int:
        options = [st.floats(), st.text(max_size=5), st.booleans()]
        if f.low is not None:
            options.append(st.integers(max_value=f.low - 1))
        if f.high is not None:
            options.append(st.integers(min_value=f.high + 1))
    elif f.kind is float:
        finite = dict(allow_nan=False, allow_infinity=False)
        options = [st.text(max_size=5), st.booleans(), st.sampled_from([math.nan, math.inf, -math.inf])]
        if f.low is not None:
            options.append(st.floats(max_value=f.low, exclude_max=f.low_in, **finite))
        if f.high is not None:
            options.append(st.floats(min_value=f.high, exclude_min=f.high_in, **finite))
    else:
        # An integer `remove` is read as a count: only counts that are no counts are bad.
        options = [st.integers(max_value=0) if f.name == "remove" else st.integers(), st.floats(),
                   st.booleans(), NUL_TEXT]
        if f.choices is not None:
            options.append(st.text(max_size=12).filter(lambda t: t not in f.choices))
    return st.one_of(*options, OTHER)


def bad_value(f: Field) -> st.SearchStrategy:
    if f.is_list:  # a string is a comma-separated list: only other types, or bad items, are bad
        value = st.one_of(st.integers(), st.floats(), st.booleans(), OTHER,
                          st.lists(bad_scalar(f), min_size=1, max_size=3))
    else:
        value = st.one_of(bad_scalar(f), st.lists(st.integers(), max_size=2))
    return st.one_of(value, st.none()) if not f.optional else value


def beside(f: Field, end, way: int):
    """The next value of the field's type after `end`, up (way 1) or down (-1)."""
    return end + way if f.kind is int else math.nextafter(end, way * math.inf)


def edges(f: Field) -> list:
    """The accepted values nearest each end of the field's range."""
    out = []
    if f.low is not None:
        out.append(f.low if f.low_in else beside(f, f.low, 1))
    if f.high is not None:
        out.append(f.high if f.high_in else INSIDE.get((f.name, f.high), beside(f, f.high, -1)))
    return out


def outside(f: Field) -> list[tuple]:
    """The refused values nearest each end of the field's range, each with the refusal it gets."""
    out = []
    if f.low is not None:
        out.append((beside(f, f.low, -1), f"at least {f.low:g}") if f.low_in else (f.low, f"above {f.low:g}"))
    if f.high is not None:
        out.append((beside(f, f.high, 1), f"at most {f.high:g}") if f.high_in else (f.high, f"below {f.high:g}"))
    return out


BAD_SERVER_KEYS = {
    "command": st.one_of(st.text(max_size=8).filter(lambda t: t != "prune"), st.integers(), st.none(), OTHER),
    "nproc_per_node": st.one_of(st.integers(max_value=0), st.integers(min_value=2), st.floats(), st.text(max_size=3),
                                st.booleans(), st.none()),
    "recipe": st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), OTHER, NUL_TEXT,
                        st.sampled_from(["../../etc/passwd", "/etc/passwd", "./x", "~/.ssh/id_rsa"])),
}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    data = write_idx(tmp_path_factory.mktemp("data") / "idx", n_train=300, n_test=100)
    app = create_app(root, TOKEN, Policy(data_roots=(data.parent,)))  # no lifespan: no scheduler
    app.base = {"command": "prune", "model": "lenet_300_100", "remove": "1%", "data": f"mnist:{data}",
                "calib_samples": 200}
    return app


def post(client, body: dict):
    # Python's json writes NaN and Infinity, and escapes lone surrogates: what a careless client sends.
    return client.post("/api/jobs", content=json.dumps(body), headers={"Authorization": f"Bearer {TOKEN}",
                                                                         "Content-Type": "application/json"})


def test_generated_bad_values_are_refused_naming_the_field(app):
    client = TestClient(app)
    assert post(client, app.base).status_code == 201  # the base job is good: each refusal is the field's
    stored = len(app.state.store.all())

    @given(st.data())
    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def refused(data):
        name = data.draw(st.sampled_from(sorted(FIELDS) + list(SERVER_KEYS)), label="field")
        value = data.draw(BAD_SERVER_KEYS[name] if name in SERVER_KEYS else bad_value(FIELDS[name]), label="value")
        r = post(client, {**app.base, name: value})
        assert 400 <= r.status_code < 500, r.text
        detail = r.json()["detail"]
        assert name in detail and "\n" not in detail, detail
        assert len(app.state.store.all()) == stored

    refused()


def test_the_edges_of_each_range_and_each_choice_are_accepted():
    """By the settings' validation itself: a job at an edge can be one this server refuses for its
    size (calib_samples 4 with the default batch_size), which is not a bound."""
    tried = 0
    for f in FIELDS.values():
        for value in edges(f) if f.kind in (int, float) else f.choices or ():
            together = {n: value for n in STEPS} if f.name in STEPS else {}
            s = PruneSettings.from_mapping({"model": "lenet_300_100", "remove": "1%", **together, f.name: value})
            if f.name == "criterion":  # read as the method and score it names
                assert s.criterion is None and value in (s.method, s.score)
            else:
                assert getattr(s, f.name) == value
            tried += 1
    assert tried == 42 + 3 + 8 + 9 + 2  # every end written in ACCEPTS, and every choice


def test_just_outside_each_range_is_refused_naming_the_field(app):
    """Where the generated values may miss a bound loosened by one, these do not; and the refusal is
    the bound's own (calib_samples 3 is refused by a check across fields too, whatever its bound)."""
    client = TestClient(app)
    stored = len(app.state.store.all())
    for f in FIELDS.values():
        for value, bound in outside(f):
            r = post(client, {**app.base, f.name: value})
            assert r.status_code == 400 and f"{f.name} must be {bound}, got" in r.json()["detail"], (f.name, r.text)
    assert len(app.state.store.all()) == stored


def test_unknown_fields_are_named(app):
    client = TestClient(app)
    stored = len(app.state.store.all())

    @given(st.text(min_size=1, max_size=12).filter(lambda k: k not in FIELDS and k not in SERVER_KEYS
                                                    and k not in ("out", "resume", "quiet")))
    @settings(max_examples=100, deadline=None)
    def refused(key):
        r = post(client, {**app.base, key: 1})
        assert r.status_code == 400 and repr(key) in r.json()["detail"], r.text
        assert len(app.state.store.all()) == stored

    refused()


HUGE_FLOATS = st.one_of(st.sampled_from([1e300, 1.7976931348623157e308, 1e18, 2.0 ** 63]),
                        st.floats(min_value=1e12, max_value=1e308))
HUGE_INTS = st.one_of(st.sampled_from([10**9, 10**18, 2**63, 2**64, 10**30, 10**400]), st.integers(min_value=10**6, max_value=10**40))
NUMBERS = sorted(n for n, s in FIELDS.items() if s.kind in (int, float) and not s.is_list)


def test_huge_values_are_refused_naming_the_field_or_fit_the_server(app):
    """1e300, 2**63 and huge counts in every numeric field (and as `remove`): either refused in one line
    naming the field, or a job whose work this server bounds (connectome.serve.work) is stored; never a 500."""
    from connectome.serve import work
    from connectome.serve.feasible import prunable_count

    client = TestClient(app)

    @given(st.data())
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def bounded(data):
        name = data.draw(st.sampled_from(NUMBERS + ["remove"]), label="field")
        kind = FIELDS[name].kind
        value = data.draw(HUGE_INTS if kind is int or name == "remove" else st.one_of(HUGE_FLOATS, HUGE_INTS),
                          label="value")
        stored = len(app.state.store.all())
        r = post(client, {**app.base, name: value})
        assert r.status_code in (201, 400), r.text
        if r.status_code == 400:
            detail = r.json()["detail"]
            assert name in detail and "\n" not in detail, detail
            assert len(app.state.store.all()) == stored
            return
        s = PruneSettings.from_mapping({k: v for k, v in r.json()["spec"].items() if k != "nproc_per_node"})
        prunable = prunable_count(s.model, None)
        target = round(prunable * float(s.remove[:-1]) / 100) if s.remove.endswith("%") else int(s.remove)
        assert work.passes(s, target, prunable, s.eval_samples or 100)[0] <= Policy().max_work
        assert s.batch_size <= max(s.calib_samples, s.eval_samples or 100)

    bounded()
