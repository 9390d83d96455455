"""The first digest rule, frozen: runs written before methods declared their own settings still verify."""

import json
import shutil

import pytest
from click.testing import CliRunner

from connectome.cli import main
from connectome.pruning.digest_v1 import digest_v1
from connectome.pruning.settings import PruneSettings

# Settings and the digest the code before the change (c387601) gave them.
BEFORE = [
    ({"model": "lenet_300_100", "remove": "50%"},
     "0db7af88bbd909920907e820ebb50a3a1ac19b6811fd3d912a6d69136e940d69"),
    ({"model": "lenet_300_100", "remove": "50%", "method": "greedy"},
     "9dc72598e2c93d6dd13ecd74c2f0a748cf17c222d322bb5a5fa8b54e53954129"),
    ({"model": "lenet_300_100", "remove": "50%", "method": "greedy", "score": "magnitude", "step": 0.02},
     "5332614bc11d13741838dfa1b5341a13e93dee7e277740c70a3ff74d390496d7"),
    ({"model": "lenet_300_100", "remove": "50%", "method": "one-shot", "score": "wanda"},
     "714a623c1f4660779ccd16e7393e0477c2b467e10787726f8586dea0ddc27d3a"),
    ({"model": "lenet_300_100", "remove": "50%", "method": "one-shot", "score": "magnitude", "learn_points": 5,
      "pattern": "2:4"}, "5585e64ccc55f3d6d0c83649ba13d4d5069eb9ab4e64474e4f5669c8e15056fe"),
]
EXTRA = json.loads("""[[{"model": "lenet_300_100", "remove": "50%", "method": "learned", "restore_cycles": 2, "score": "fisher"}, "3fa42942db2cb0d13c4d67ddaa98f533dd55f2bb0da845a7934d555446cc51e6"], [{"model": "efficientnet_lite0", "remove": "30%", "data": "imagenet:x", "calib_samples": 1000, "batch_size": 50, "learn_epochs": 10.0, "learn_select": false}, "bafe8e9dafaeb8aa628cb5d53db2326a6748972bb157cf76f6ac493f2dee63be"], [{"model": "lenet_300_100", "remove": "1000", "criterion": "taylor", "seed": 3, "headroom": false, "exclude": ["fc3.weight"]}, "5cce65eb5304fd997ead8671bb34a7d000fc0dc10b05ec65cc2c13f7f0fa1549"]]""")


@pytest.mark.parametrize("settings,digest", BEFORE + [tuple(x) for x in EXTRA])
def test_the_first_rule_gives_the_digests_runs_were_named_with(settings, digest):
    assert digest_v1(PruneSettings.from_mapping(dict(settings)).to_dict()) == digest


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    """A run folder whose manifest records the first rule's digest, as one written before the change."""
    out = tmp_path_factory.mktemp("d") / "run"
    r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--remove", "5000", "--method", "one-shot",
                                  "--score", "magnitude", "--calib-samples", "400", "--eval-samples", "200",
                                  "--batch-size", "100", "--out", str(out), "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    old = digest_v1(PruneSettings.from_mapping(manifest["settings"]).to_dict())
    assert old != manifest["settings_digest"]  # the rules differ for a one-shot run: the test means something
    manifest["settings_digest"] = old
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_a_run_of_the_first_rule_verifies(old_run):
    r = CliRunner().invoke(main, ["verify", str(old_run)])
    assert r.exit_code == 0, r.output


def test_its_settings_edited_still_fail(old_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(old_run, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["settings"]["eval_samples"] = 20
    (copy / "manifest.json").write_text(json.dumps(manifest))
    r = CliRunner().invoke(main, ["verify", str(copy)])
    assert r.exit_code == 1 and "changed after the run" in r.output
