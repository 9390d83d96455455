"""A JSON job becomes `connectome prune` arguments, checked by the CLI's own code (no server)."""

import pytest

from connectome.errors import ConnectomeError
from connectome.serve.spec import Policy, parse, to_argv, under_roots


def test_fields_become_flags_and_the_model_comes_last():
    argv = to_argv({"model": "-odd", "remove": "1M", "include": ["a*", "b*"], "amp": True, "seed": 3})
    assert argv == ["--remove=1M", "--include=a*", "--include=b*", "--amp", "--seed=3", "--", "-odd"]
    assert to_argv({"amp": False}) == []
    # Fields are the long options' names, whatever the Python parameter is called.
    assert to_argv({"compile": True, "channels_last": False}) == ["--compile", "--no-channels-last"]
    with pytest.raises(ConnectomeError, match="unknown field 'compile_'"):
        to_argv({"compile_": True})


def test_parse_resolves_a_recipe_and_checks_like_prune():
    job = parse({"command": "prune", "recipe": "prune-lenet_300_100", "seed": 1}, Policy())
    assert job.model == "lenet_300_100" and job.remove and job.argv == ["--recipe=prune-lenet_300_100", "--seed=1"]
    with pytest.raises(ConnectomeError, match="REMOVE is required"):
        parse({"model": "lenet_300_100"}, Policy())
    with pytest.raises(ConnectomeError, match="not a valid float"):
        parse({"model": "lenet_300_100", "remove": "1%", "step": "big"}, Policy())


def test_user_code_needs_permission(tmp_path):
    spec = {"model": "json:loads", "remove": "1%", "data": "mnist"}
    with pytest.raises(ConnectomeError, match="imports code"):
        parse(spec, Policy())
    assert parse(spec, Policy(allow_user_code=True)).model == "json:loads"


def test_under_roots_resolves_links_and_dots(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "in").mkdir(parents=True)
    outside.mkdir()
    (root / "link").symlink_to(outside)
    assert under_roots(str(root / "in"), [root]) and under_roots(str(root / "new"), [root])
    assert not under_roots(str(root / "link"), [root])
    assert not under_roots(f"{root}/in/../../outside", [root])
    assert not under_roots("in", [root])  # relative: refused, whatever the server's working folder
