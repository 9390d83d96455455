import contextlib
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_MNIST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"


def write_idx(folder: Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> Path:
    """Tiny MNIST-format files (gzipped IDX), learnable: the class is a bright 4x4 block's position."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            r, col = divmod(int(c), 5)
            images[i, 4 + 10 * r:8 + 10 * r, 2 + 5 * col:6 + 5 * col] = 250
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">HBBIII", 0, 8, 3, n, 28, 28) + images.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">HBBI", 0, 8, 1, n) + labels.tobytes())
    return folder


@pytest.fixture
def idx_folder(tmp_path):
    return write_idx(tmp_path / "mnist")


@contextlib.contextmanager
def torch_threads(n: int):
    """Torch on `n` threads for the block: tiny matrices on shared cores only wait for each other on
    more, and sums over other numbers of threads round differently."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(autouse=True)
def _quiet_and_seeded(monkeypatch, tmp_path):
    torch.manual_seed(0)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # timm fails at once instead of retrying for a minute
