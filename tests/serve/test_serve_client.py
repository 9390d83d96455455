"""The client commands against a server that answers what a connectome server would not: each reply
is checked before it is used, and a malformed one is one line, never a traceback."""

import json

import pytest

pytest.importorskip("httpx")

from click.testing import CliRunner  # noqa: E402
from httpserver import FileServer  # noqa: E402

from connectome.cli import main  # noqa: E402

ROW = {"id": 1, "state": "done", "model": "lenet_300_100", "remove": "50%", "removed": 133100, "target": 133100,
       "top1": 97.5, "elapsed": 12.0}


@pytest.mark.parametrize("reply, field", [
    ({"jobs": 5}, "jobs"),
    ({"jobs": [{**ROW, "id": "one"}]}, "jobs.0.id"),
    ({"jobs": [ROW, {k: v for k, v in ROW.items() if k != "state"}]}, "jobs.1.state"),
    ({"jobs": [{**ROW, "target": "many"}]}, "jobs.0.target"),
    ({"rows": []}, "jobs"),
    ([ROW], "the reply"),
])
def test_jobs_refuses_a_malformed_listing_in_one_line(tmp_path, reply, field):
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "jobs").write_text(json.dumps(reply))
    with FileServer(tmp_path) as server:
        r = CliRunner().invoke(main, ["jobs", "--server", server.url])
    assert r.exit_code != 0
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert f"the reply is not a list of jobs ({field}:" in lines[0] and "is --server a connectome server?" in lines[0]


def test_jobs_lists_a_well_formed_reply(tmp_path):
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "jobs").write_text(json.dumps({"jobs": [ROW, {**ROW, "id": 2, "state": "failed",
                                                                      "model": None, "top1": None}]}))
    with FileServer(tmp_path) as server:
        r = CliRunner().invoke(main, ["jobs", "--server", server.url])
    assert r.exit_code == 0, r.output
    assert "97.50%" in r.output and "133,100 / 133,100" in r.output and "failed" in r.output


def test_the_client_library_does_not_import_the_command_line():
    import ast
    from pathlib import Path

    import connectome.serve

    for path in Path(connectome.serve.__file__).parent.rglob("*.py"):
        imported = [n.module or "" for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in imported if m.startswith("connectome.cli")], path
