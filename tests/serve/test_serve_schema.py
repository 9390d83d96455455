"""The job's JSON Schema is the pydantic model generated from the settings' one declaration, and that
model takes and refuses values at each bound as the settings' own validation does."""

import math

import pytest

pydantic = pytest.importorskip("pydantic")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from connectome.pruning.settings import PruneSettings  # noqa: E402
from connectome.serve.app import create_app  # noqa: E402
from connectome.serve.schema import job_body_schema  # noqa: E402
from connectome.serve.spec import Policy  # noqa: E402
from connectome.settings import INT64, check_value, settings_model  # noqa: E402

BASE = {"model": "m", "remove": "1%"}


def test_the_served_job_schema_is_the_settings_model(tmp_path):
    served = TestClient(create_app(tmp_path, "t" * 32, Policy())).get("/openapi.json").json()
    assert served["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "properties"]["batch_size"]["minimum"] == 1
    body = job_body_schema()
    model = settings_model(PruneSettings, server_only=True).model_json_schema()
    for name, prop in model["properties"].items():
        prop.pop("title")
        assert body["properties"][name] == prop, name
    assert set(body["properties"]) == set(model["properties"]) | {"command", "recipe", "nproc_per_node"}
    assert body["additionalProperties"] is False


def near(spec) -> list:
    """Values at and just past each bound of a numeric setting, and far outside any."""
    m, out = spec.meta, [10**400, -(10**400), INT64 + 1, math.inf, math.nan, True, "1"]
    for bound in (m["minimum"], m["maximum"], m["above"], m["below"]):
        if bound is not None:
            step = 1 if spec.kind is int else abs(bound) * 1e-12 + 1e-300
            out += [bound, bound - step, bound + step]
    return [spec.kind(v) if spec.kind is int and isinstance(v, float) and math.isfinite(v) else v for v in out]


@pytest.mark.parametrize("spec", [s for s in PruneSettings.specs() if s.kind in (int, float) and not s.is_list],
                         ids=lambda s: s.name)
def test_the_model_bounds_are_the_settings_bounds(spec):
    model = settings_model(PruneSettings)
    for value in near(spec):
        try:
            check_value(spec, value)
            ours = True
        except ValueError:
            ours = False
        try:
            model.model_validate({**BASE, spec.name: value})
            theirs = True
        except pydantic.ValidationError:
            theirs = False
        assert ours == theirs, (spec.name, value)


def test_the_model_refuses_unknown_settings_and_takes_each_choice():
    model = settings_model(PruneSettings)
    with pytest.raises(pydantic.ValidationError, match="extra"):
        model.model_validate({**BASE, "nope": 1})
    for spec in PruneSettings.specs():
        for choice in spec.choices() or ():
            assert getattr(model.model_validate({**BASE, spec.name: choice}), spec.name) == choice
