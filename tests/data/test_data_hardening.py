"""Issue 32, rows 17 and 18, through the real command: a damaged data file, an image too large to
decode, or data whose shape the model does not take ends in one line naming the file (or the model
and the data), never a traceback. Readers of bytes are driven by hypothesis: they raise nothing but
ConnectomeError."""

import gzip
import io
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import write_idx
from connectome.cli import main
from connectome.data import paths
from connectome.data.cifar_files import CLASSES, decode
from connectome.data.mnist import read_idx
from connectome.errors import ConnectomeError

TRAIN_LABELS, TRAIN_IMAGES = "train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz"


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def one_line(r, *words: str) -> bool:
    """Exit 2, one line that holds every word, and no exception but the exit (no traceback)."""
    lines = r.output.strip().splitlines()
    return (r.exit_code == 2 and isinstance(r.exception, SystemExit) and len(lines) == 1
            and all(w in lines[0] for w in words))


@pytest.fixture(scope="module")
def good_idx(tmp_path_factory):
    return write_idx(tmp_path_factory.mktemp("idx") / "mnist")


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def idx(shape: tuple[int, ...], data: bytes | None = None) -> bytes:
    n = int(np.prod(shape))
    return struct.pack(f">HBB{len(shape)}I", 0, 8, len(shape), *shape) + (bytes(n) if data is None else data)


# --- row 17: MNIST idx files -------------------------------------------------------------------------

def _cut(labels: bytes) -> bytes:
    return labels[:len(labels) // 2]


def _spliced(labels: bytes) -> bytes:
    return labels[:12] + bytes(range(256)) + labels[12:]


# case: (the file, its new bytes made from the good label file's bytes)
DAMAGED = {
    "empty label file": (TRAIN_LABELS, lambda _: gz(b"")),
    "short label file": (TRAIN_LABELS, lambda _: gz(b"\0\0\x08")),
    "rank 200": (TRAIN_LABELS, lambda _: gz(struct.pack(">HBB", 0, 8, 200) + bytes(40))),
    "count mismatch": (TRAIN_LABELS, lambda _: gz(idx((299,)))),
    "rank-2 images": (TRAIN_IMAGES, lambda _: gz(idx((300, 784)))),
    "labels of 200": (TRAIN_LABELS, lambda _: gz(idx((300,), bytes([200]) * 300))),
    "truncated gz": (TRAIN_LABELS, _cut),
    "corrupt gzip": (TRAIN_LABELS, _spliced),
    "not gzip": (TRAIN_LABELS, lambda _: b"not a gzip file at all"),
    "header lies": (TRAIN_LABELS, lambda _: gz(struct.pack(">HBBI", 0, 8, 1, 2**32 - 1) + bytes(10))),
    "trailing bytes": (TRAIN_LABELS, lambda _: gz(idx((300,)) + b"more")),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_idx_file_is_one_line_naming_it(good_idx, tmp_path, case):
    folder = tmp_path / "mnist"
    shutil.copytree(good_idx, folder)
    name, content = DAMAGED[case]
    (folder / name).write_bytes(content((good_idx / TRAIN_LABELS).read_bytes()))
    r = cli("eval", "lenet_300_100", "--data", f"mnist:{folder}", "--device", "cpu")
    assert one_line(r, str(folder / name)), r.output


@given(st.binary(max_size=64))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_idx_reader_raises_only_connectome_error_on_any_bytes(tmp_path, data):
    for name, content in (("x-idx1-ubyte", data), ("x-idx1-ubyte.gz", gz(data)), ("y-idx1-ubyte.gz", data)):
        (tmp_path / name).write_bytes(content)
        for rank in (None, 1, 3):
            try:
                read_idx(tmp_path / name, rank)
            except ConnectomeError as e:
                assert len(str(e).splitlines()) == 1 and str(tmp_path / name) in str(e)


@given(rank=st.integers(0, 255), dims=st.lists(st.integers(0, 2**32 - 1), max_size=6), body=st.binary(max_size=64),
       cut=st.integers(0, 200))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_idx_reader_on_headers_that_lie(tmp_path, rank, dims, body, cut):
    """Headers whose rank, dims and data disagree (huge dims, too few or too many bytes), whole or cut short."""
    raw = struct.pack(f">HBB{len(dims)}I", 0, 8, rank, *dims) + body
    path = tmp_path / "x-idx3-ubyte.gz"
    compressed = gz(raw)
    path.write_bytes(compressed[:cut] if cut < len(compressed) else compressed)
    try:
        array = read_idx(path)
    except ConnectomeError as e:
        assert len(str(e).splitlines()) == 1 and str(path) in str(e)
    else:
        assert cut >= len(compressed) and array.shape == tuple(dims) and len(dims) == rank


# --- row 18: images too large to decode, data the model does not take ------------------------------

def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels: PIL refuses it as a decompression bomb when it opens it,
    before reading any pixel, so the test needs no 400-megapixel image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def small_png() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)).save(out, "PNG")
    return out.getvalue()


@st.composite
def damaged_images(draw) -> bytes:
    """A good PNG or a huge one's header, with bytes flipped, cut short and random bytes appended."""
    raw = bytearray(draw(st.sampled_from([small_png(), png_header(20000, 20000), b""])))
    for _ in range(draw(st.integers(0, 4))):
        if raw:
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw[:draw(st.integers(0, len(raw)))]) + draw(st.binary(max_size=16))


def cifar_images(root: Path, big: str) -> None:
    """One 32x32 image per class and split; `big` (split/class/file) a 20000x20000 PNG."""
    for split in ("train", "test"):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(root / split / name / "0.png")
    (root / big).write_bytes(png_header(20000, 20000))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")


def test_a_huge_image_in_a_cifar_folder_or_tarball_is_one_line_naming_it(tmp_path, cache):
    cifar_images(tmp_path / "c10", "train/cat/big.png")
    r = cli("eval", "lenet_300_100", "--data", f"cifar10:{tmp_path / 'c10'}", "--device", "cpu")
    assert one_line(r, str(tmp_path / "c10" / "train/cat/big.png"), "too large"), r.output
    with tarfile.open(tmp_path / "c10.tar.gz", "w:gz") as tf:
        for split in ("train", "test"):
            tf.add(tmp_path / "c10" / split, arcname=split)
    r = cli("eval", "lenet_300_100", "--data", f"cifar10:{tmp_path / 'c10.tar.gz'}", "--device", "cpu")
    assert one_line(r, "c10.tar.gz:train/cat/big.png", "too large"), r.output


def image_folder(root: Path, big: str | None = None) -> Path:
    """folder:PATH with two classes of 40x30 images; `big` (split/class/file) a 20000x20000 PNG."""
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 30), (40 * i, 0, 0)).save(root / split / c / f"{i}.png")
    if big:
        (root / big).write_bytes(png_header(20000, 20000))
    return root


def test_a_huge_image_in_an_image_folder_is_one_line_naming_it(tmp_path):
    folder = image_folder(tmp_path / "f", "val/cat/1.png")
    r = cli("eval", "efficientnet_lite0", "--data", f"folder:{folder}", "--device", "cpu")
    assert one_line(r, str(folder / "val/cat/1.png"), "too large"), r.output


def test_a_huge_image_read_by_a_loader_worker_is_still_one_line(tmp_path):
    """A DataLoader worker's error comes back rebuilt from its whole traceback: still one line."""
    from torchvision.transforms import v2 as T
    from connectome.data import batches, load_dataset
    folder = image_folder(tmp_path / "f", "train/dog/2.png")
    tf = T.Compose([T.Resize((8, 8)), T.PILToTensor(), T.ToDtype(torch.float32, scale=True)])
    splits = load_dataset(f"folder:{folder}", tf)
    with pytest.raises(ConnectomeError) as e:
        list(batches(splits.train, 4, workers=1))
    assert str(e.value).startswith(f"{folder / 'train/dog/2.png'} is too large") and "\n" not in str(e.value)


def cifar_binary(folder: Path, n: int = 20, label: int | None = None) -> Path:
    """The binary release's six files, n random records each; every label `label` when given."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
        records[:, 0] = rng.integers(0, 10, n) if label is None else label
        records.tofile(folder / name)
    return folder


def test_cifar_into_lenet_says_what_the_model_takes_and_the_data_gives(tmp_path):
    data = f"cifar10:{cifar_binary(tmp_path / 'c10')}"
    r = cli("prune", "lenet_300_100", "--data", data, "--remove", "2%", "--out", str(tmp_path / "run"),
            "--calib-samples", "6", "--batch-size", "4", "--quiet", "--device", "cpu")
    assert one_line(r, "lenet_300_100", data, "3x32x32", "784 values"), r.output
    assert not (tmp_path / "run").exists()
    r = cli("eval", "lenet_300_100", "--data", data, "--device", "cpu")
    assert one_line(r, "3x32x32", "784 values"), r.output


@given(damaged_images())
@settings(max_examples=300, deadline=None)
def test_cifar_image_decoder_raises_only_connectome_error(raw):
    try:
        assert decode(raw, "x.png").shape == (32, 32, 3)
    except ConnectomeError as e:
        assert len(str(e).splitlines()) == 1 and "x.png" in str(e)


def test_a_cifar_binary_label_out_of_range_is_one_line_naming_the_file(tmp_path):
    folder = cifar_binary(tmp_path / "c10", label=200)
    r = cli("eval", "lenet_300_100", "--data", f"cifar10:{folder}", "--device", "cpu")
    assert one_line(r, str(folder / "data_batch_1.bin"), "label 200"), r.output


def test_image_files_into_a_model_without_transforms_is_one_line(tmp_path):
    folder = image_folder(tmp_path / "f")
    r = cli("prune", "lenet_300_100", "--data", f"folder:{folder}", "--remove", "2%", "--out", str(tmp_path / "run"),
            "--calib-samples", "4", "--batch-size", "2", "--quiet", "--device", "cpu")
    assert one_line(r, f"folder:{folder}", "not tensors", "lenet_300_100"), r.output


def test_a_model_with_fewer_outputs_than_the_data_has_classes_is_refused():
    from torch import nn
    from connectome.data import ImageTensors
    from connectome.data.fit import check_fit
    data = ImageTensors(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 4]))
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ConnectomeError, match=r"tiny gives outputs of shape \(3,\) per image, where toy has 5 classes"):
        check_fit(model, data, 5, "toy", "tiny", "cpu")
    check_fit(model, data, 3, "toy", "tiny", "cpu")


@given(damaged_images())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_image_folder_loader_raises_only_connectome_error(tmp_path, raw):
    from connectome.data.folders import load_rgb
    path = tmp_path / "x.png"
    path.write_bytes(raw)
    try:
        assert load_rgb(str(path)).mode == "RGB"
    except ConnectomeError as e:
        assert len(str(e).splitlines()) == 1 and str(path) in str(e)


# --- row 21's part: a data root that does not exist ------------------------------------------------

def test_serve_refuses_a_data_root_that_does_not_exist(tmp_path):
    """click's Path(exists=True) refuses it before the server takes its root or a port."""
    r = cli("serve", "--root", str(tmp_path / "root"), "--data-root", str(tmp_path / "nonexistent"), "--port", "0")
    assert r.exit_code == 2 and f"'{tmp_path / 'nonexistent'}' does not exist" in r.output, r.output
    assert not (tmp_path / "root").exists()
