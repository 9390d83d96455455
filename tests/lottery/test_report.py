"""The lottery report: CSV columns, and the figure's error bars over seeds."""

import pytest
from matplotlib.axes import Axes

from connectome.lottery.report import COLUMNS, csv_text, plot, spread


def rows(bars: bool) -> list[dict]:
    out = []
    for level, pct in ((0, 100.0), (1, 80.0), (2, 64.0)):
        for arm in (("ticket",) if level == 0 else ("ticket", "random_reinit")):
            r = {"level": level, "arm": arm, "percent_remaining": pct, "kept": int(pct * 10), "early_stop_iter": 300,
                 "early_stop_val_loss": 0.4, "early_stop_test_acc": 80.0 + level, "final_test_acc": 79.0 + level,
                 "seconds": 1.0}
            if bars:
                for k in ("early_stop_iter", "early_stop_test_acc", "final_test_acc"):
                    r[k + "_min"], r[k + "_max"], r[k + "_std"] = r[k] - 1, r[k] + 2, 1.5
            out.append(r)
    return out


@pytest.fixture
def errorbars(monkeypatch):
    calls = []
    original = Axes.errorbar

    def spy(self, x, y, yerr=None, **kw):
        calls.append((list(x), list(y), yerr))
        return original(self, x, y, yerr=yerr, **kw)

    monkeypatch.setattr(Axes, "errorbar", spy)
    return calls


def test_means_over_seeds_get_min_max_bars(tmp_path, errorbars):
    plot(tmp_path / "f.png", rows(bars=True), "means")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert len(errorbars) == 3 * 2  # three panels, two arms
    x, y, (below, above) = errorbars[0]
    assert x == [100.0, 80.0, 64.0] and below == [1, 1, 1] and above == [2, 2, 2]


def test_one_run_gets_no_bars(tmp_path, errorbars):
    plot(tmp_path / "f.png", rows(bars=False), "one seed")
    assert errorbars == [] and (tmp_path / "f.png").exists()


def test_spread_falls_back_to_the_standard_deviation():
    assert spread({"a": 5.0, "a_std": 0.5}, "a") == (0.5, 0.5)
    assert spread({"a": 5.0, "a_std": None}, "a") == (0.0, 0.0)  # one seed
    assert spread({"a": 5, "a_min": 4.6, "a_max": 6.0}, "a") == pytest.approx((0.4, 1.0))


def test_csv_has_its_columns_and_four_decimals():
    text = csv_text(rows(bars=True))
    lines = text.splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert lines[1] == "0,ticket,100.0000,1000,300,0.4000,80.0000,79.0000,1.0000"
