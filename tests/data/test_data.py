import hashlib
import tarfile

import numpy as np
import pytest
import torch

from connectome.data import ImageTensors, batches, cifar, load_dataset, paths, subset
from connectome.data.mnist import read_idx
from connectome.errors import ConnectomeError
from conftest import SHARED_MNIST, write_idx
from httpserver import FileServer


def test_idx_reader_on_files_the_test_wrote(idx_folder):
    s = load_dataset(f"mnist:{idx_folder}")
    assert len(s.train) == 300 and len(s.test) == 100 and s.train.images.shape[1:] == (1, 28, 28)
    x, y = s.train[0]
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1  # ToTensor() style, no normalisation


def test_idx_rejects_a_truncated_file(idx_folder):
    raw = idx_folder / "train-images-idx3-ubyte"
    import gzip
    raw.write_bytes(gzip.open(idx_folder / "train-images-idx3-ubyte.gz").read()[:1000])
    with pytest.raises(ConnectomeError, match="truncated"):
        read_idx(raw)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="no shared MNIST")
def test_real_mnist():
    s = load_dataset(f"mnist:{SHARED_MNIST}")
    assert len(s.train) == 60000 and len(s.test) == 10000
    assert torch.bincount(s.train.labels)[:3].tolist() == [5923, 6742, 5958]
    assert abs(s.train.images.float().mean().item() / 255 - 0.1307) < 1e-3


def test_fashion_mnist_from_debian():
    if not paths.DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    s = load_dataset("fashion-mnist")
    assert len(s.train) == 60000 and len(s.test) == 10000 and s.num_classes == 10


def test_mnist_download_through_torchvision(tmp_path, monkeypatch):
    """No local copy: torchvision downloads from a mirror, here a real server on 127.0.0.1."""
    import torchvision.datasets as tvd
    served = write_idx(tmp_path / "served")
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in served.iterdir()}
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(tvd.MNIST, "resources", [(n, md5[n]) for n in sorted(md5)])
    with FileServer(served) as server:
        monkeypatch.setattr(tvd.MNIST, "mirrors", [server.url])
        s = load_dataset("mnist")
        assert len(s.train) == 300 and len(set(server.requests)) == 4
        seen = len(server.requests)
        load_dataset("mnist")  # the second time reads the cache
        assert len(server.requests) == seen


def test_download_failure_says_where_to_put_files(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(tvd.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens on port 9
    with pytest.raises(ConnectomeError, match="put the four IDX files in"):
        load_dataset("mnist")


def write_cifar(folder, n=20, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
        rec[:, 0] = rng.integers(0, 10, n)
        rec.tofile(folder / name)
    return folder


def test_cifar_binary_reader(tmp_path):
    folder = write_cifar(tmp_path / "cifar-10-batches-bin")
    s = load_dataset(f"cifar10:{tmp_path}")
    assert len(s.train) == 100 and len(s.test) == 20 and s.train.images.shape[1:] == (3, 32, 32)
    raw = np.fromfile(folder / "data_batch_1.bin", dtype=np.uint8).reshape(-1, 3073)
    assert s.train.labels[0] == raw[0, 0] and torch.equal(s.train.images[0].reshape(-1), torch.from_numpy(raw[0, 1:]))


def test_cifar_download_of_the_binary_release(tmp_path, monkeypatch):
    write_cifar(tmp_path / "src" / "cifar-10-batches-bin")
    (tmp_path / "www").mkdir()
    archive = tmp_path / "www" / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(cifar, "CIFAR10_BINARY_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    with FileServer(tmp_path / "www") as server:
        monkeypatch.setattr(cifar, "CIFAR10_BINARY_URL", server.url + "cifar-10-binary.tar.gz")
        assert len(load_dataset("cifar10").train) == 100


def test_image_folder(tmp_path):
    from PIL import Image
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 30), (i * 40, 0, 0)).save(tmp_path / split / c / f"{i}.png")
    from torchvision.transforms import v2 as T
    tf = T.Compose([T.Resize((32, 32)), T.PILToTensor(), T.ToDtype(torch.float32, scale=True)])
    s = load_dataset(f"folder:{tmp_path}", tf)
    assert s.num_classes == 2 and len(s.train) == 6
    x, y = next(batches(s.train, 4))
    assert x.shape == (4, 3, 32, 32)


@pytest.mark.parametrize("spec,message", [("nope", "unknown data spec"), ("imagenet", "needs a folder"),
                                          ("imagenet:/does/not/exist", "does not exist"),
                                          ("mnist:/tmp", "no mnist IDX files")])
def test_bad_specs(spec, message):
    with pytest.raises(ConnectomeError, match=message):
        load_dataset(spec)


def test_subsets_are_seeded_and_disjoint():
    ds = ImageTensors(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1), torch.arange(100))
    a, b = subset(ds, 30, seed=1), subset(ds, 20, seed=1, skip=30)
    assert torch.equal(a.labels, subset(ds, 30, seed=1).labels)
    assert not set(a.labels.tolist()) & set(b.labels.tolist())
    assert not torch.equal(a.labels, subset(ds, 30, seed=2).labels)


def test_normalization_equals_torchvisions_bit_for_bit():
    from torchvision.transforms import v2
    from torchvision.transforms.functional import convert_image_dtype, normalize
    from connectome.data import Normalization
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    assert torch.equal(Normalization(mean, std)(x), normalize(convert_image_dtype(x, torch.float32), mean, std))
    v2_float = v2.ToDtype(torch.float32, scale=True)(x)
    assert torch.equal(Normalization(reciprocal=True)(x), v2_float)
    assert not torch.equal(Normalization()(x), v2_float)  # x/255 and x*(1/255) differ in the last bit
    ds = ImageTensors(x, torch.arange(4), Normalization(mean, std))
    assert torch.equal(ds.subset([1, 2])[1][0], Normalization(mean, std)(x[2]))


def test_batches_on_a_device_and_default_workers(monkeypatch):
    from torch.utils.data import TensorDataset
    from connectome.data import default_workers
    ds = ImageTensors(torch.randint(0, 256, (10, 1, 2, 2), dtype=torch.uint8), torch.arange(10))
    for (a, ya), (b, yb) in zip(batches(ds, 4), batches(ds, 4, device="cpu"), strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb) and b.dtype == torch.float32
    assert default_workers(ds) == 0
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    files = TensorDataset(torch.zeros(3, 1), torch.zeros(3))
    assert default_workers(files) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: four ranks share the machine's cores
    assert default_workers(files) == 3
