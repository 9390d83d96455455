"""A JSON job becomes validated PruneSettings, checked by the settings' own code, then by what a
shared server must refuse and what it knows cannot run (no server)."""

import json
from dataclasses import dataclass

import pytest

from conftest import write_idx
from connectome.errors import ConnectomeError
from connectome.pruning.settings import PruneSettings
from connectome.serve import feasible
from connectome.serve.spec import Policy, not_for_jobs, parse, paths_of, stored_settings, under_roots
from connectome.settings import setting


@pytest.fixture
def data(tmp_path):
    return write_idx(tmp_path / "idx", n_train=300, n_test=100)


def job(folder, **kw):
    return {"model": "lenet_300_100", "remove": "1%", "data": f"mnist:{folder}", "calib_samples": 200, **kw}


def test_the_stored_job_is_the_settings_and_runs_as_they_say(data, tmp_path):
    parsed = parse({"command": "prune", **job(data, include=["2.*"], remove=1000), "nproc_per_node": 1},
                   Policy(data_roots=(tmp_path,)))
    assert parsed.settings == PruneSettings.from_mapping(job(data, include=["2.*"], remove="1000"))
    spec = json.loads(json.dumps(parsed.spec))  # as the store keeps it
    assert spec["nproc_per_node"] == 1 and spec["remove"] == "1000" and spec["method"] == "learned" and spec["criterion"] is None
    assert set(spec) == {s.name for s in PruneSettings.specs()} | {"nproc_per_node"}
    assert stored_settings(spec, "job 1") == (parsed.settings, 1)


def test_a_recipe_is_read_at_submit_and_the_body_overrides_it():
    parsed = parse({"command": "prune", "recipe": "prune-lenet_300_100", "seed": 1}, Policy())
    assert parsed.settings.model == "lenet_300_100" and parsed.settings.seed == 1 and parsed.settings.remove
    assert "recipe" not in parsed.spec
    for recipe in ("../../../etc/passwd", "/etc/passwd", "./prune-lenet_300_100"):
        with pytest.raises(ConnectomeError, match="recipe"):
            parse({"recipe": recipe}, Policy())
    with pytest.raises(ConnectomeError, match="recipe"):
        parse({"recipe": ["prune-lenet_300_100"]}, Policy())


@pytest.mark.parametrize("change, message", [
    ({"model": None}, "job: model must be given"),
    ({"remove": "lots"}, "job: remove: malformed count"),
    ({"step": "big"}, "job: step must be a finite number, got 'big'"),
    ({"tolerance": float("inf")}, "job: tolerance must be a finite number, got inf"),
    ({"batch_size": 0}, "job: batch_size must be at least 1"),
    ({"criterion": "vibes"}, "job: criterion must be one of"),
    ({"compile_": True}, "job: unknown setting 'compile_'"),
    ({"out": "/tmp/x"}, "job: 'out' is set by the server"),
    ({"nproc_per_node": 2}, "job: nproc_per_node must be an integer from 1 to 1"),
    ({"data": "mnist:relative"}, "job: data 'relative' is not an absolute path under a data root"),
    ({"cache_calib": "/etc"}, "job: cache_calib '/etc' is not an absolute path under a data root"),
    ({"model": "json:loads"}, "job: model 'json:loads' imports code"),
])
def test_bad_fields_are_refused_naming_them(data, tmp_path, change, message):
    with pytest.raises(ConnectomeError) as e:
        parse(job(data, **change), Policy(data_roots=(tmp_path,)))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_user_code_needs_permission(data, tmp_path):
    spec = job(data, model="json:loads")
    with pytest.raises(ConnectomeError, match="imports code"):
        parse(spec, Policy(data_roots=(tmp_path,)))
    assert parse(spec, Policy(allow_user_code=True, data_roots=(tmp_path,))).settings.model == "json:loads"


@pytest.mark.parametrize("change, message", [
    ({"remove": "300k"}, "job: remove count '300k' (300,000) exceeds the 266,200 prunable weights of lenet_300_100"),
    ({"remove": "300", "include": ["nothing.*"]}, "job: include/exclude leave no prunable weights"),
    ({"calib_samples": 301}, "job: calib_samples 301 exceeds the 300 training samples"),
    ({"eval_samples": 101}, "job: eval_samples 101 exceeds the 100 evaluation samples"),
    ({"calib_samples": 4, "accept_fraction": 0.9}, "leaves fewer than 2 samples"),
    ({"device": "cuda"}, "job: device cuda: this server has no GPU"),
    ({"device": "gpu"}, "job: device must be auto, cpu, cuda or cuda:N"),
    ({"data": "{root}"}, "unknown data spec"),  # under the root, but not KIND:PATH
    ({"model": "mobilenet_v3_small", "data": None}, "job: data is required for mobilenet_v3_small"),
    ({"model": "mobilenet_v3_small", "weights": "NOPE"}, "job: weights 'NOPE'"),
    ({"weights": "DEFAULT"}, "job: weights names torchvision weights"),
])
def test_impossible_jobs_are_refused_before_they_are_stored(data, tmp_path, change, message):
    change = {k: v.format(root=tmp_path) if isinstance(v, str) else v for k, v in change.items()}
    with pytest.raises(ConnectomeError) as e:
        parse(job(data, **change), Policy(data_roots=(tmp_path,)))
    assert message in str(e.value)


def test_what_fits_is_accepted(data, tmp_path):
    policy = Policy(data_roots=(tmp_path,), gpus=2, max_nproc=2)
    assert parse(job(data, remove="266200", calib_samples=300, eval_samples=100), policy)
    assert parse({**job(data, device="cuda:1"), "nproc_per_node": 2}, policy)
    with pytest.raises(ConnectomeError, match="cuda:0 to cuda:1"):
        parse({**job(data, device="cuda:2"), "nproc_per_node": 2}, policy)


def test_prunable_counts_need_no_weights():
    """torchvision, timm, the project's models and Lite0 are counted from their architecture alone."""
    assert feasible.prunable_count("lenet_300_100", None) == 784 * 300 + 300 * 100 + 100 * 10
    assert feasible.prunable_count("lenet_300_100", None, exclude=("4.*",)) == 784 * 300 + 100 * 10
    assert feasible.prunable_count("mobilenet_v3_large", None) == 5_451_272
    assert feasible.prunable_count("timm:mobilenetv3_large_100.ra_in1k", None) == 5_451_272
    assert feasible.prunable_count("efficientnet_lite0", None) > 4_000_000
    assert feasible.prunable_count("json:loads", None) is None  # a user's code is never imported to count


def test_split_sizes_are_counted_cheaply(data, tmp_path):
    assert feasible.split_sizes("mnist", str(data)) == (300, 100)
    folder = tmp_path / "images"
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("a", "b"):
            (folder / split / cls).mkdir(parents=True)
            for i in range(n):
                (folder / split / cls / f"{i}.jpg").write_bytes(b"")
        (folder / split / "a" / "notes.txt").write_text("not an image")
    assert feasible.split_sizes("folder", str(folder)) == (6, 4)
    assert feasible.split_sizes("mnist", str(tmp_path / "empty")) is None
    assert feasible.split_sizes("fashion-mnist", None) is None  # the server's own copy: left to the run
    cifar = tmp_path / "cifar" / "cifar-10-batches-bin"
    cifar.mkdir(parents=True)
    for i in range(1, 6):
        (cifar / f"data_batch_{i}.bin").write_bytes(bytes(3073 * 7))
    (cifar / "test_batch.bin").write_bytes(bytes(3073 * 3))
    assert feasible.split_sizes("cifar10", str(tmp_path / "cifar")) == (35, 3)


def test_paths_and_refused_settings_come_from_the_metadata(tmp_path):
    s = PruneSettings.from_mapping({"model": "m", "remove": "1%", "data": "cifar10:/d", "weights_file": "/w.pth",
                                    "cache_calib": "/c"})
    assert sorted(paths_of(s)) == [("cache_calib", "/c"), ("data", "/d"), ("weights_file", "/w.pth")]
    assert paths_of(PruneSettings.from_mapping({"model": "m", "remove": "1%", "data": "fashion-mnist"})) == []

    @dataclass
    class Local(PruneSettings):
        scratch: str | None = setting(None, "A folder of the machine that runs the command.", server=False)
        more: list[str] = setting([], "Files.", path=True)

    assert not_for_jobs(Local) == {"scratch"} and not_for_jobs(PruneSettings) == set()
    assert paths_of(Local.from_mapping({"model": "m", "remove": "1%", "more": ["/a", "mnist:/b"]})) == \
        [("more", "/a"), ("more", "/b")]


def test_a_job_may_not_set_what_the_metadata_keeps_from_jobs(monkeypatch, data, tmp_path):
    from connectome.serve import spec as spec_module

    monkeypatch.setattr(spec_module, "not_for_jobs", lambda cls: {"workers"})
    with pytest.raises(ConnectomeError, match="job: workers cannot be set in a service job"):
        parse(job(data, workers=2), Policy(data_roots=(tmp_path,)))


def test_under_roots_resolves_links_and_dots(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "in").mkdir(parents=True)
    outside.mkdir()
    (root / "link").symlink_to(outside)
    assert under_roots(str(root / "in"), [root]) and under_roots(str(root / "new"), [root])
    assert not under_roots(str(root / "link"), [root])
    assert not under_roots(f"{root}/in/../../outside", [root])
    assert not under_roots("in", [root])  # relative: refused, whatever the server's working folder
    assert under_roots(f"{root}/" + "x" * 5000, [root]) in (True, False)  # a name too long: no exception
