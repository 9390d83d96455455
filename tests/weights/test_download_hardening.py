"""Issue 32, rows 1, 19 and 21 (first part): `connectome download` against servers on 127.0.0.1 that
reply what they like. The bearer token goes only to the origin the user named, a malformed reply is
one line, never a traceback, and a token file holds the token alone, on one line."""

import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("httpx")
pytest.importorskip("pydantic")

from click.testing import CliRunner  # noqa: E402

from httpserver import FileServer  # noqa: E402

from connectome.cli import main  # noqa: E402

TOKEN = "s3cret-token"


class Replies:
    """An HTTP server on 127.0.0.1 that answers each path as told (status, headers, body) and keeps
    the Authorization header of every request it gets."""

    def __init__(self):
        self.routes, self.seen = {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.seen.append((self.path, self.headers.get("Authorization")))
                status, headers, body = server.routes.get(self.path, (404, {}, b"no such path"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def json(self, path, value, status=200):
        self.routes[path] = (status, {"Content-Type": "application/json"}, json.dumps(value).encode())

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def origin():
    s = Replies()
    yield s
    s.close()


@pytest.fixture
def other():
    s = Replies()
    yield s
    s.close()


def job(*files):
    return {"id": 1, "state": "done", "files": [{"name": n, "size": len(b), "url": u} for n, u, b in files]}


def download(server_url, out, *args):
    return CliRunner().invoke(main, ["download", "1", "--server", server_url, "--out", str(out), *args])


def one_line_error(r):
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), (r.output, r.exc_info)
    assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output


# --- row 1: credentials stay with their origin --------------------------------------------------

@pytest.mark.parametrize("where", ["port", "host"])
def test_row1_a_file_at_another_origin_gets_no_token(origin, other, tmp_path, where):
    base = other.url if where == "port" else f"http://localhost:{other.port}"
    origin.json("/api/jobs/1", job(("model.safetensors", "/api/jobs/1/files/model.safetensors", b"model"),
                                   ("mask.safetensors", f"{base}/mask.safetensors", b"mask")))
    origin.routes["/api/jobs/1/files/model.safetensors"] = (200, {}, b"model")
    other.routes["/mask.safetensors"] = (200, {}, b"mask")
    r = download(origin.url, tmp_path / "got", "--token", TOKEN)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "got" / "mask.safetensors").read_bytes() == b"mask"
    assert other.seen == [("/mask.safetensors", None)]
    assert set(origin.seen) == {("/api/jobs/1", f"Bearer {TOKEN}"), ("/api/jobs/1/files/model.safetensors", f"Bearer {TOKEN}")}


def test_row1_a_redirect_to_another_origin_drops_the_token(origin, other, tmp_path):
    origin.json("/api/jobs/1", job(("model.safetensors", "/files/model", b"model"), ("mask.safetensors", "/files/mask", b"mask")))
    origin.routes["/files/model"] = (302, {"Location": f"{other.url}/model"}, b"")
    origin.routes["/files/mask"] = (307, {"Location": "/files/mask-here"}, b"")  # same origin: kept
    origin.routes["/files/mask-here"] = (200, {}, b"mask")
    other.routes["/model"] = (200, {}, b"model")
    r = download(origin.url, tmp_path / "got", "--token", TOKEN)
    assert r.exit_code == 0, r.output
    assert [(tmp_path / "got" / n).read_bytes() for n in ("model.safetensors", "mask.safetensors")] == [b"model", b"mask"]
    assert other.seen == [("/model", None)]
    assert ("/files/mask-here", f"Bearer {TOKEN}") in origin.seen


def test_row1_a_redirect_that_ends_nowhere_writes_nothing(origin, tmp_path):
    origin.json("/api/jobs/1", job(("model.safetensors", "/files/model", b"")))
    origin.routes["/files/model"] = (302, {}, b"")  # no Location: not followed, and not a file either
    r = download(origin.url, tmp_path / "got")
    one_line_error(r)
    assert "302" in r.output and "model.safetensors" in r.output
    assert not (tmp_path / "got" / "model.safetensors").exists()


# --- row 19: malformed replies ------------------------------------------------------------------

GOOD = job(("model.safetensors", "/f/model", b"model"), ("curve.csv", "/f/curve", b"a,b\n"))


@pytest.mark.parametrize("body, says", [
    (b"<html>not json</html>", "not JSON"),
    (b"", "not JSON"),
    (b"\xff\xfe\x00garbage", "not JSON"),
    (b"[" * 100000, "not JSON"),
    (json.dumps({"id": 1, "state": "done"}).encode(), "files"),
    (json.dumps([1, 2]).encode(), "not a job"),
    (json.dumps({"state": "done", "files": {"a": 1}}).encode(), "files"),
    (json.dumps({"state": "done", "files": [1]}).encode(), "files.0"),
    (json.dumps({"state": "done", "files": [{"name": "m", "size": "12", "url": "/f/model"}]}).encode(), "files.0.size"),
    (json.dumps({"state": "done", "files": [{"name": "m", "size": True, "url": "/f/model"}]}).encode(), "files.0.size"),
    (json.dumps({"state": "done", "files": [{"name": 3, "size": 1, "url": "/f/model"}]}).encode(), "files.0.name"),
    (json.dumps({"state": ["done"], "files": []}).encode(), "state"),
    (json.dumps({"state": "run\nning", "files": []}).encode(), "state"),
])
def test_row19_a_malformed_reply_is_one_line(origin, tmp_path, body, says):
    origin.routes["/api/jobs/1"] = (200, {"Content-Type": "application/json"}, body)
    r = download(origin.url, tmp_path / "got")
    one_line_error(r)
    assert says in r.output and origin.url in r.output
    assert not (tmp_path / "got").exists()  # the folder it created is removed again


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", ".connectome", "x\x00y", "m" * 300])
def test_row19_a_file_name_that_is_no_plain_name_is_refused(origin, tmp_path, name):
    origin.json("/api/jobs/1", job((name, "/f/model", b"model")))
    origin.routes["/f/model"] = (200, {}, b"model")
    (tmp_path / "run").mkdir()
    r = download(origin.url, tmp_path / "run" / "got")
    one_line_error(r)
    assert [p.name for p in (tmp_path / "run").iterdir()] == []


@pytest.mark.parametrize("sent, says", [(b"mod", "3 bytes"), (b"model and more", "more than")])
def test_row19_a_file_of_another_size_than_listed_is_refused(origin, tmp_path, sent, says):
    origin.json("/api/jobs/1", job(("model.safetensors", "/f/model", b"model")))
    origin.routes["/f/model"] = (200, {}, sent)
    r = download(origin.url, tmp_path / "got")
    one_line_error(r)
    assert says in r.output and "model.safetensors" in r.output
    assert not (tmp_path / "got" / "model.safetensors").exists()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://[::1", "ftp://127.0.0.1/x", "http://\n/x"])
def test_row19_a_file_url_that_is_no_http_url_is_one_line(origin, tmp_path, url):
    origin.json("/api/jobs/1", job(("model.safetensors", url, b"model")))
    one_line_error(download(origin.url, tmp_path / "got"))


@pytest.mark.parametrize("status, body", [(500, b"Internal Server Error\nTraceback (most recent call last):\n  boom"),
                                          (404, b'["detail"]'), (403, json.dumps({"detail": "x" * 5000}).encode()),
                                          (302, b"")])
def test_row19_an_error_reply_is_one_short_line(origin, tmp_path, status, body):
    origin.routes["/api/jobs/1"] = (status, {}, body)
    r = download(origin.url, tmp_path / "got")
    one_line_error(r)
    assert str(status) in r.output and len(r.output) < 600


def json_values():
    scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                        max_leaves=12)


def broken_replies():
    """Valid replies with one field dropped or replaced, whole JSON values, and raw bytes."""
    paths = [(), ("state",), ("files",), ("files", 0), ("files", 0, "name"), ("files", 0, "size"), ("files", 0, "url"),
             ("files", 1, "size")]

    def mutate(path, value, drop):
        reply = json.loads(json.dumps(GOOD))
        if not path:
            return value
        holder = reply
        for key in path[:-1]:
            holder = holder[key]
        if drop:
            del holder[path[-1]]
        else:
            holder[path[-1]] = value
        return reply

    mutated = st.builds(mutate, st.sampled_from(paths), json_values() | st.text(max_size=30), st.booleans())
    return mutated.map(lambda v: json.dumps(v).encode()) | json_values().map(lambda v: json.dumps(v).encode()) | st.binary(max_size=60)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=broken_replies())
def test_row19_any_reply_is_files_or_one_line(origin, body):
    origin.routes["/api/jobs/1"] = (200, {"Content-Type": "application/json"}, body)
    origin.routes["/f/model"] = (200, {}, b"model")
    origin.routes["/f/curve"] = (200, {}, b"a,b\n")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "got"
        r = download(origin.url, out)
        if r.exit_code == 0:
            assert {p.name for p in out.iterdir()} <= {".connectome", "model.safetensors", "curve.csv"}
        else:
            one_line_error(r)
        assert [p.name for p in Path(tmp).iterdir()] in ([], ["got"])


# --- row 21: a token file holds one line --------------------------------------------------------

@pytest.mark.parametrize("text", ["", "\n\n", "tok\nen\n", "a\n\nb", "to ken", "tök"])
def test_row21_a_token_file_that_is_no_single_token_is_refused(origin, tmp_path, text):
    origin.json("/api/jobs", {"jobs": []})
    f = tmp_path / "token"
    f.write_bytes(text.encode())
    r = CliRunner().invoke(main, ["jobs", "--server", origin.url, "--token-file", str(f)])
    one_line_error(r)
    assert str(f) in r.output and origin.seen == []


def test_row21_serve_refuses_a_two_line_token_file(tmp_path):
    f = tmp_path / "token"
    f.write_text("first\nsecond\n")
    f.chmod(0o600)
    p = subprocess.run([sys.executable, "-m", "connectome", "serve", "--root", str(tmp_path / "root"), "--port", "0",
                        "--token-file", str(f)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "2 lines" in p.stderr, p.stderr


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=40) | st.text(max_size=30).map(str.encode))
def test_row21_any_token_file_is_sent_whole_or_refused(origin, data):
    origin.json("/api/jobs", {"jobs": []})
    origin.seen.clear()
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "token"
        f.write_bytes(data)
        r = CliRunner().invoke(main, ["jobs", "--server", origin.url, "--token-file", str(f)])
    if r.exit_code == 0:
        token = data.decode("ascii").strip()
        assert token and "\n" not in token and origin.seen == [("/api/jobs", f"Bearer {token}")]
    else:
        one_line_error(r)
        assert origin.seen == []


# --- row 19, `weights pull`: a registry served on 127.0.0.1 with malformed entries ----------------

SHA = "0123abcd" + "0" * 56
ENTRY = {"url": "lenet_300_100.x-0123abcd.safetensors", "sha256": SHA, "size": 10, "base": {"model": "lenet_300_100"},
         "mask": {"url": "lenet_300_100.x_mask-0123abcd.safetensors", "sha256": SHA, "size": 5},
         "state_sha256": SHA, "meta": {}}


@pytest.fixture
def site(tmp_path):
    with FileServer(tmp_path) as server:
        yield tmp_path, server


def entry_with(holder: str, key: str, value, drop: bool) -> dict:
    entry = json.loads(json.dumps(ENTRY))
    target = entry["mask"] if holder == "mask" else entry
    if drop:
        del target[key]
    else:
        target[key] = value
    return entry


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(entry=st.builds(entry_with, st.sampled_from(["entry", "mask"]), st.sampled_from(["url", "sha256"]),
                       json_values() | st.text(max_size=40) | st.sampled_from(["http://127.0.0.1:99999/x-0123abcd.pt",
                       "http://127.0.0.1:0/x-0123abcd.pt", "https://[::1/x-0123abcd.pt", "x-0123abcd\x00.pt",
                       "http://127.0.0.1:1/a b-0123abcd.pt", "http://127.0.0.1:1/a\nb-0123abcd.pt", "x\n-0123abcd.pt", "ftp://127.0.0.1/x-0123abcd.pt", SHA.upper(), SHA[:8]]),
                       st.booleans()),
       mask=st.booleans())
def test_row19_pull_of_any_malformed_entry_is_one_line(site, entry, mask):
    folder, server = site
    (folder / "registry.json").write_text(json.dumps({"format": "connectome.registry/1", "weights": {"lenet_300_100.x": entry}}))
    r = CliRunner().invoke(main, ["weights", "pull", "lenet_300_100.x", "--registry", f"{server.url}registry.json",
                                  "--quiet", *(["--mask"] if mask else [])])
    one_line_error(r)
