"""Published weights: publish from a run folder, pull over real HTTP (127.0.0.1), verify, load."""

import json
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from connectome.io import save_state
from connectome.cli.weights import weights as weights_group
from connectome.errors import ConnectomeError
from connectome.models.load import file_sha256, load_model, state_sha256
from connectome.pruning.flat import FlatWeights, prunable_parameters
from connectome.pruning.results import write_results
from connectome.pruning.settings import PruneSettings
from connectome.weights import REGISTRY, cache_dir, load, publish, pull, read_registry
from httpserver import FileServer

NAME = "lenet_300_100.test_20k"


def make_run(out: Path, remove: int = 20000, model: str = "lenet_300_100", **settings) -> tuple[Path, torch.nn.Module]:
    """A real run folder, written by prune.write_results, without the minute a real prune takes:
    magnitude pruning stands in for the loop; the curve's metrics are measured on the run's evaluation
    subset (publish measures them again), or made up where that data is not here."""
    loaded = load_model(model, weights_file=settings.get("weights_file"))
    flat = FlatWeights(prunable_parameters(loaded.module))
    base_sha = state_sha256(loaded.module.state_dict())
    s = PruneSettings(model=model, remove=str(remove), criterion="magnitude", eval_samples=1000, **settings)
    dense = measured(loaded, s) or (88.7, 99.8, 0.4031)
    flat.mask[flat.base.abs().argsort()[:remove]] = False
    flat.write()
    final = measured(loaded, s) or (87.3, 99.6, 0.4417)
    setup = SimpleNamespace(loaded=loaded, base_sha256=base_sha, target=remove, decision=range(800),
                            accept=range(200), evaluation=range(1000), device="cpu")
    ev = lambda top1, top5, loss: {"eval_top1": top1, "eval_top5": top5, "eval_loss": loss, "eval_samples": 1000}
    log = [{"step": 0, "phase": "dense", "accepted": True, "removed": 0, "size": 0, **ev(*dense)},
           {"step": 1, "phase": "remove", "accepted": True, "removed": remove, "size": remove, **ev(*final)}]
    run = SimpleNamespace(setup=setup, s=s, out=out, flat=flat, prunable=int(flat.eligible.sum()), log=log, elapsed=1.0)
    write_results(run, f"connectome prune {model} --remove {remove} --criterion magnitude")
    return out, loaded.module


def measured(loaded, s) -> tuple[float, float, float] | None:
    """(top-1, top-5, loss) of the model on the settings' evaluation subset, where that data is here."""
    from connectome.data import load_dataset, subset
    from connectome.evaluate import evaluate

    if s.data:
        return None
    test = load_dataset(loaded.dataset, loaded.transforms).test
    m = evaluate(loaded.module, subset(test, s.eval_samples, s.seed), s.batch_size, "cpu")
    return m.top1, m.top5, m.loss


def final_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["result"]["final"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture
def served(run, tmp_path):
    """The run published into a folder that a real HTTP server on 127.0.0.1 serves."""
    folder = tmp_path / "site"
    with FileServer(folder) as server:
        publish(run[0], NAME, url_base=server.url, registry=folder / "registry.json")
        yield server, folder / "registry.json"


def cli(*args):
    from connectome.cli import Group, main
    group = main if "weights" in main.commands else Group(commands={"weights": weights_group})
    return CliRunner().invoke(group, ["weights", *args])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_publish_writes_hash_named_files_and_entry(run, tmp_path):
    entry = publish(run[0], NAME, registry=tmp_path / "registry.json")
    for record, stem in ((entry, NAME), (entry["mask"], f"{NAME}.mask")):
        path = tmp_path / record["url"]
        assert record["url"] == f"{stem}-{record['sha256'][:8]}.safetensors"  # relative to the registry
        assert file_sha256(path) == record["sha256"] and path.stat().st_size == record["size"]
        assert torch.hub.HASH_REGEX.search(path.name).group(1) == record["sha256"][:8]
    assert entry["sha256"] == file_sha256(run[0] / "model.safetensors")  # the run's bytes, unchanged
    assert entry["mask"]["size"] * 20 < entry["size"]
    assert entry["removed"] == 20000 and entry["sparsity"] == round(20000 / entry["prunable"], 6)
    assert entry["base"] == {"model": "lenet_300_100", "weights": "reference:lenet_300_100",
                             "sha256": state_sha256(load_model("lenet_300_100").module.state_dict())}
    # Metrics are measured again on the run's evaluation subset, never typed.
    final = final_metrics(run[0])
    assert entry["meta"]["_metrics"] == {"fashion-mnist": {"acc@1": final["top1"], "acc@5": final["top5"],
                                                           "loss": pytest.approx(final["loss"]), "samples": 1000}}
    assert entry["meta"]["_metrics_source"] == "measured again on fashion-mnist (1,000 images)"
    assert entry["meta"]["_base_metrics"]["fashion-mnist"]["acc@1"] > final["top1"] - 5
    assert entry["meta"]["num_params"] == 266610 and entry["meta"]["num_nonzero_params"] == 266610 - 20000
    assert entry["criterion"] == "magnitude" and entry["command"].startswith("connectome prune lenet_300_100")
    assert entry["license"] == "BSD-3-Clause" and entry["recipe"]["remove"] == "20000"
    assert read_registry(tmp_path / "registry.json")[0] == {NAME: entry}


def test_publish_refuses_bad_input(run, tmp_path):
    registry = tmp_path / "registry.json"
    with pytest.raises(ConnectomeError, match="arch.tag"):
        publish(run[0], "lenet-300.x", registry=registry)
    with pytest.raises(ConnectomeError, match="not a finished run"):
        publish(tmp_path, NAME, registry=registry)
    r = cli("publish", str(run[0]), "--name", NAME, "--registry", str(registry))
    top1 = f"{final_metrics(run[0])['top1']:.2f}%"
    assert r.exit_code == 0 and f"{NAME}-" in r.output and f"{NAME}.mask-" in r.output and top1 in r.output
    other, _ = make_run(tmp_path / "other", remove=1000)
    with pytest.raises(ConnectomeError, match="already published"):
        publish(other, NAME, registry=registry)
    # A curve edited after the run no longer agrees with the manifest.
    top1 = final_metrics(other)["top1"]
    (other / "curve.csv").write_text((other / "curve.csv").read_text().replace(str(top1), str(top1 + 1)))
    r = cli("publish", str(other), "--name", "lenet_300_100.other", "--registry", str(registry))
    assert r.exit_code == 2 and "disagree" in r.output


def test_pull_verifies_and_caches(served):
    server, registry = served
    path = pull(NAME, registry, progress=False)
    entry = read_registry(registry)[0][NAME]
    assert path == cache_dir() / Path(entry["url"]).name and file_sha256(path) == entry["sha256"]
    assert str(path).startswith(str(Path(torch.hub.get_dir())))  # TORCH_HOME is the test's tmp dir
    assert pull(NAME, registry, progress=False) == path
    assert len(server.requests) == 1  # the second pull is a cache hit
    r = cli("pull", NAME, "--registry", str(registry), "--mask", "--quiet")
    assert r.exit_code == 0 and r.output.strip().endswith(Path(entry["mask"]["url"]).name)
    assert len(server.requests) == 2
    # A damaged cached copy is fetched again.
    path.write_bytes(b"damaged")
    assert file_sha256(pull(NAME, registry, progress=False)) == entry["sha256"] and len(server.requests) == 3


def test_corrupted_download_is_refused_and_deleted(served):
    server, registry = served
    entry = read_registry(registry)[0][NAME]
    served_file = server.root / Path(entry["url"]).name
    data = bytearray(served_file.read_bytes())
    data[-1] ^= 1
    served_file.write_bytes(bytes(data))
    with pytest.raises(ConnectomeError, match="sha256.*refused and deleted"):
        pull(NAME, registry, progress=False)
    assert len(server.requests) == 1
    assert not cache_dir().exists() or list(cache_dir().iterdir()) == []  # neither the file nor a .partial


def test_server_down_is_a_clear_error(run, tmp_path):
    registry = tmp_path / "registry.json"
    publish(run[0], NAME, url_base=f"http://127.0.0.1:{free_port()}/w", registry=registry)
    with pytest.raises(ConnectomeError, match=r"cannot download http://127\.0\.0\.1:\d+/w/lenet.*refused"):
        pull(NAME, registry, progress=False)
    r = cli("pull", NAME, "--registry", str(registry))
    assert r.exit_code == 2 and r.output.startswith("error: cannot download") and r.output.count("\n") == 1
    r = cli("pull", NAME, "--registry", f"http://127.0.0.1:{free_port()}/registry.json")
    assert r.exit_code == 2 and "cannot read the registry" in r.output


def test_remote_registry_with_relative_urls(run, tmp_path):
    folder = tmp_path / "site"
    publish(run[0], NAME, registry=folder / "registry.json")  # urls relative to the registry
    with FileServer(folder) as server:
        path = pull(NAME, server.url + "registry.json", mask=True, progress=False)
        assert server.requests == ["/registry.json", "/" + path.name]
        r = cli("list", "--registry", server.url + "registry.json")
    top1 = f"{final_metrics(run[0])['top1']:.2f}% fashion-mnist"
    assert r.exit_code == 0 and NAME in r.output and "20,000" in r.output and top1 in r.output


def test_pulled_checkpoint_gives_the_outputs_of_its_run(served, run, tmp_path):
    server, registry = served
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        expected = run[1](x)
        for via in ("model", "mask"):
            model = load(NAME, registry=registry, via=via, progress=False)
            assert not model.training and torch.equal(model(x), expected), via
    assert [p.rsplit("-", 1)[0] for p in server.requests] == [f"/{NAME}", f"/{NAME}.mask"]
    # Transforms as torchvision's weights.transforms(): a PIL image in, the model's input out.
    image = Image.fromarray((x[0, 0] * 255).to(torch.uint8).numpy())
    assert model.transforms()(image).shape == (1, 28, 28)
    assert model.weights.meta["_metrics"]["fashion-mnist"]["acc@1"] == final_metrics(run[0])["top1"]
    assert "transforms" not in dict(model.named_modules())  # an attribute, not a submodule


def test_mask_route_refuses_other_base_weights(served, tmp_path):
    _, registry = served
    state = load_model("lenet_300_100").module.state_dict()
    state["2.bias"] = state["2.bias"] + 1e-6
    save_state(tmp_path / "other_base.safetensors", state)
    with pytest.raises(ConnectomeError, match="not those"):
        load(NAME, registry=registry, via="mask", base_weights_file=tmp_path / "other_base.safetensors",
             progress=False)


def test_torchvision_architecture_pruned_from_a_local_base_file(tmp_path, monkeypatch):
    from torchvision.models import mobilenet_v3_small
    from torchvision.transforms._presets import ImageClassification

    from connectome.weights.measure import Measured

    publishing = sys.modules["connectome.weights.publish"]  # the module, which the package's publish() hides

    base_file = tmp_path / "base.safetensors"
    save_state(base_file, mobilenet_v3_small().state_dict())
    run_dir, pruned = make_run(tmp_path / "run", 100_000, "mobilenet_v3_small", weights_file=str(base_file),
                               data="imagenet:/nowhere")
    registry, name = tmp_path / "registry.json", "mobilenet_v3_small.test_100k_in1k"
    with pytest.raises(ConnectomeError, match="--license"):
        publish(run_dir, name, registry=registry)
    # Only metrics measured again are published: the ImageNet copy the manifest names is not here.
    with pytest.raises(ConnectomeError, match="cannot be measured again: the evaluation data is not here"):
        publish(run_dir, name, registry=registry, license="BSD-3-Clause")
    assert not registry.exists()
    # Where the data is (here, a measurement that stands in for it), the entry carries what was measured.
    monkeypatch.setattr(publishing, "measure", lambda run, manifest, base: Measured(
        {"top1": 87.3, "top5": 99.6, "loss": 0.4417}, {"top1": 88.7, "top5": 99.8, "loss": 0.4031}, 1000,
        "measured again on imagenet:/nowhere (1,000 images)"))
    entry = publish(run_dir, name, registry=registry, license="BSD-3-Clause")
    assert set(entry["meta"]["_metrics"]) == {"imagenet"} and entry["meta"]["_metrics"]["imagenet"]["acc@1"] == 87.3
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        model = load(name, registry=registry)  # torchvision's architecture, the pruned state loaded
        assert torch.equal(model(x), pruned(x)) and isinstance(model.transforms(), ImageClassification)
        with pytest.raises(ConnectomeError, match="base_weights_file"):
            load(name, registry=registry, via="mask")
        model = load(name, registry=registry, via="mask", base_weights_file=base_file)
        assert torch.equal(model(x), pruned(x))


def test_unknown_name_suggests(served):
    _, registry = served
    with pytest.raises(ConnectomeError, match="did you mean lenet_300_100.test_20k"):
        pull("lenet_300_100.test_20", registry)


def test_committed_registry_is_consistent():
    entries, base = read_registry()
    assert entries, "weights/registry.json publishes the reference models' pruned versions"
    for name, e in entries.items():
        for record in (e, e["mask"]):
            path = REGISTRY.parent / record["url"]
            assert "://" not in record["url"] and path.is_file(), name
            assert path.stat().st_size == record["size"] and file_sha256(path) == record["sha256"], name
            assert torch.hub.HASH_REGEX.search(path.name).group(1) == record["sha256"][:8]
        assert set(e["meta"]["_metrics"]) == {"fashion-mnist"} and e["command"].startswith("connectome prune")
    lenet = [n for n, e in entries.items() if e["base"]["model"] == "lenet_300_100"]
    assert lenet
    a, b = (load(lenet[0], via=via, progress=False) for via in ("model", "mask"))
    assert state_sha256(a.state_dict()) == state_sha256(b.state_dict()) == entries[lenet[0]]["state_sha256"]
    assert json.loads(REGISTRY.read_text())["format"] == "connectome.registry/1"


def test_publish_refuses_a_changed_weight(tmp_path):
    """A run whose model had one surviving weight changed is not published, and nothing is written."""
    run_dir, _ = make_run(tmp_path / "run", 5000)
    from connectome.io import read_metadata
    from safetensors.torch import load_file
    state = load_file(str(run_dir / "model.safetensors"))
    state["2.weight"].view(-1)[state["2.weight"].view(-1).nonzero()[0]] += 1e-3
    save_state(run_dir / "model.safetensors", state, read_metadata(run_dir / "model.safetensors"))
    registry = tmp_path / "site" / "registry.json"
    with pytest.raises(ConnectomeError, match="fails verification"):
        publish(run_dir, "lenet_300_100.tampered", registry=registry)
    assert not registry.parent.exists() or not any(registry.parent.iterdir())


@pytest.mark.parametrize("content", ['{"format": "connectome.registry/1", "weights": []}',
                                     '{"format": "connectome.registry/1", "weights": {"a.b": {"url": 1}}}',
                                     '[1, 2]', '"text"'])
def test_registry_of_the_wrong_shape_is_one_line(tmp_path, content):
    registry = tmp_path / "registry.json"
    registry.write_text(content)
    r = cli("pull", "a.b", "--registry", str(registry))
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "registry" in r.output
