"""The names this module held before data/ was split (specs, tensors, splits, mnist, cifar, folders,
paths), for code that still imports them from here; new code imports connectome.data."""

from connectome.data.cifar import CIFAR10_BINARY_MD5, CIFAR10_BINARY_URL, _cifar_folder  # noqa: F401
from connectome.data.mnist import _IDX_FILES, find_idx, read_idx  # noqa: F401
from connectome.data.paths import CACHE, DEBIAN_FASHION_MNIST  # noqa: F401
from connectome.data.specs import KINDS, load_dataset  # noqa: F401
from connectome.data.splits import Splits, batches, default_workers, subset  # noqa: F401
from connectome.data.tensors import PLAIN, ImageTensors, Normalization  # noqa: F401
