"""Property test of job validation, with the app in-process (no server, no scheduler): for every
field a job may carry, generated bad values (wrong types, non-finite numbers, values out of the
field's range or choices, NUL characters) are refused with a 4xx that names the field, and no job
is stored."""

import json
import math

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
FIELDS = {s.name: s for s in PruneSettings.specs() if s.meta["server"]}
SERVER_KEYS = ("command", "nproc_per_node", "recipe")
# Strings that some fields accept as valid whatever their text is not generated for them; only
# wrong types, NUL characters and (for choices) names outside the choices are.
OTHER = st.one_of(st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.just({}))
NUL_TEXT = st.text(max_size=8).map(lambda t: t + "\0")


def bad_scalar(spec) -> st.SearchStrategy:
    """Values that the field refuses as one scalar (a list's item)."""
    m = spec.meta
    if spec.kind is bool:
        options = [st.integers(), st.floats(), st.text(max_size=5)]
    elif spec.kind is int:
        options = [st.floats(), st.text(max_size=5), st.booleans()]
        if m["minimum"] is not None:
            options.append(st.integers(max_value=math.ceil(m["minimum"]) - 1))
        if m["maximum"] is not None:
            options.append(st.integers(min_value=math.floor(m["maximum"]) + 1))
    elif spec.kind is float:
        options = [st.text(max_size=5), st.booleans(), st.sampled_from([math.nan, math.inf, -math.inf])]
        finite = dict(allow_nan=False, allow_infinity=False)
        if m["minimum"] is not None:
            options.append(st.floats(max_value=m["minimum"], exclude_max=True, **finite))
        if m["above"] is not None:
            options.append(st.floats(max_value=m["above"], **finite))
        if m["maximum"] is not None:
            options.append(st.floats(min_value=m["maximum"], exclude_min=True, **finite))
        if m["below"] is not None:
            options.append(st.floats(min_value=m["below"], **finite))
    else:
        # An integer `remove` is read as a count: only counts that are no counts are bad.
        options = [st.integers(max_value=0) if spec.name == "remove" else st.integers(), st.floats(),
                   st.booleans(), NUL_TEXT]
        choices = spec.choices()
        if choices is not None:
            options.append(st.text(max_size=12).filter(lambda t: t not in choices))
    return st.one_of(*options, OTHER)


def bad_value(spec) -> st.SearchStrategy:
    if spec.is_list:  # a string is a comma-separated list: only other types, or bad items, are bad
        value = st.one_of(st.integers(), st.floats(), st.booleans(), OTHER,
                          st.lists(bad_scalar(spec), min_size=1, max_size=3))
    else:
        value = st.one_of(bad_scalar(spec), st.lists(st.integers(), max_size=2))
    return st.one_of(value, st.none()) if not spec.optional else value


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
