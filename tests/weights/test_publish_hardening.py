"""Issue 32 rows 4, 5 and 9: concurrent publishes all land in the registry, a failed publish leaves no
file behind, and a name's architecture is the run's.

Each test names the row of the issue it covers."""

import errno
import multiprocessing
import os
import threading
from pathlib import Path

import pytest
from cli_helpers import FAST, cli, one_line

from connectome.cli import main
from connectome.weights import publish, read_registry


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished magnitude run of LeNet-300-100 (a few seconds)."""
    out = tmp_path_factory.mktemp("run") / "run"
    r = cli("prune", "lenet_300_100", "--remove", "2%", "--out", out, *FAST)
    assert r.exit_code == 0, r.output
    return out


def published_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.safetensors")) if folder.exists() else []


# --- row 4: concurrent publishes ---------------------------------------------------------------------

def test_row4_concurrent_publishes_from_threads_all_land(run_dir, tmp_path):
    """What the service does: each request's thread calls publish on one registry."""
    registry = tmp_path / "site" / "registry.json"
    names = [f"lenet_300_100.thread_{i}" for i in range(6)]
    errors = []

    def one(name):
        try:
            publish(run_dir, name, registry=registry)
        except Exception as e:  # noqa: BLE001 (reported by the assertion below)
            errors.append(e)

    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    entries, _ = read_registry(registry)
    assert sorted(entries) == names
    assert len(published_files(registry.parent)) == 2 * len(names)
    assert sorted(p.name for p in registry.parent.iterdir() if not p.name.endswith(".safetensors")) == ["registry.json"]


def _cli_in_child(args: list[str]) -> None:
    """The command in a forked process, as `connectome ARGS` runs it (without importing torch anew)."""
    try:
        main(args, prog_name="connectome")
    except SystemExit as e:
        os._exit(e.code or 0)
    os._exit(0)


def test_row4_concurrent_cli_publishes_all_land(run_dir, tmp_path):
    """Six `connectome weights publish` processes at once, each its own interpreter."""
    registry = tmp_path / "site" / "registry.json"
    names = [f"lenet_300_100.process_{i}" for i in range(6)]
    # forkserver: children fork from a clean server process; forked from this one, whose OpenMP threads
    # have run, a child can hang in its first torch operation (seen under the full suite on two cores)
    context = multiprocessing.get_context("forkserver")
    procs = [context.Process(target=_cli_in_child, args=(["weights", "publish", str(run_dir), "--name", n,
                                                          "--registry", str(registry)],)) for n in names]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * len(names)
    assert sorted(read_registry(registry)[0]) == names
    assert len(published_files(registry.parent)) == 2 * len(names)


# --- row 5: a failed publish leaves nothing ----------------------------------------------------------

def test_row5_registry_that_is_a_folder_is_refused_with_nothing_written(run_dir, tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    r = cli("weights", "publish", run_dir, "--name", "lenet_300_100.x", "--registry", folder)
    assert one_line(r) and f"--registry {folder} is a folder" in r.output, r.output
    assert list(tmp_path.rglob("*")) == [folder]
    (tmp_path / "file").write_text("not a folder")
    r = cli("weights", "publish", run_dir, "--name", "lenet_300_100.x", "--registry", tmp_path / "file" / "r.json")
    assert one_line(r) and "which is a file" in r.output, r.output


def test_row5_a_registry_write_that_fails_leaves_no_file(run_dir, tmp_path, monkeypatch):
    from connectome.weights import registry as reg

    registry = tmp_path / "site" / "registry.json"
    first = publish(run_dir, "lenet_300_100.first", registry=registry)
    before = {p.name: p.read_bytes() for p in registry.parent.iterdir()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(registry))

    monkeypatch.setattr(reg, "write_text", full)
    r = cli("weights", "publish", run_dir, "--name", "lenet_300_100.second", "--registry", registry)
    assert one_line(r, 1) and "No space left on device" in r.output, r.output
    assert {p.name: p.read_bytes() for p in registry.parent.iterdir()} == before  # the new files are gone
    # Republishing the same run under its name keeps the files it shares with the entry already there.
    with pytest.raises(OSError):
        publish(run_dir, "lenet_300_100.first", registry=registry)
    assert {p.name: p.read_bytes() for p in registry.parent.iterdir()} == before
    monkeypatch.undo()
    assert read_registry(registry)[0] == {"lenet_300_100.first": first}


# --- row 9: a name's architecture is the run's --------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet50.fake", "lenet_300_10.fake", "lenet_300_100_x.fake"])
def test_row9_a_name_of_another_architecture_is_refused(run_dir, tmp_path, name):
    registry = tmp_path / "site" / "registry.json"
    r = cli("weights", "publish", run_dir, "--name", name, "--registry", registry)
    assert one_line(r) and "the run pruned lenet_300_100, so its name is lenet_300_100.TAG" in r.output, r.output
    assert not registry.parent.exists()


@pytest.mark.parametrize("spec, arch", [("lenet_300_100", "lenet_300_100"), ("resnet50", "resnet50"),
                                        ("timm:resnet50.a1_in1k", "resnet50"), ("pkg.models:tiny_net", "tiny_net"),
                                        ("timm:vit_base_patch16_224.augreg_in21k", "vit_base_patch16_224")])
def test_row9_the_architecture_of_a_spec(spec, arch):
    from connectome.weights.publish import architecture

    assert architecture(spec) == arch
