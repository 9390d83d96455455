"""connectome.plots: one figure helper, PNG written atomically."""

import pytest

from connectome.plots import figure, grid, percent_remaining_axis


def test_the_png_is_written_and_no_temporary_is_left(tmp_path):
    path = tmp_path / "sub" / "f.png"
    with figure(path, ncols=2, figsize=(6, 3), title="two panels") as (fig, axes):
        assert len(axes) == 2
        for ax in axes:
            ax.plot([100, 50, 10], [1, 2, 3], "o-")
            percent_remaining_axis(ax, 10)
            grid(ax)
        assert not path.exists()  # nothing is written before the block ends
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["f.png"]
    assert fig.get_suptitle() == "two panels"


def test_one_axes_by_default(tmp_path):
    with figure(tmp_path / "one.png") as (fig, ax):
        ax.plot([0, 1], [0, 1])
    assert (tmp_path / "one.png").exists()


class Boom(Exception):
    pass


def test_an_exception_inside_the_block_writes_nothing(tmp_path):
    with pytest.raises(Boom):
        with figure(tmp_path / "f.png") as (fig, ax):
            ax.plot([0, 1], [0, 1])
            raise Boom
    assert list(tmp_path.iterdir()) == []


def test_a_failed_figure_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.png"
    path.write_bytes(b"old")
    with pytest.raises(Boom):
        with figure(path):
            raise Boom
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.png"]


def test_no_pyplot_state_is_touched(tmp_path):
    # The figure lives outside pyplot's registry: a caller's open figures and backend are left alone.
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    with figure(tmp_path / "f.png"):
        pass
    assert plt.get_fignums() == before
