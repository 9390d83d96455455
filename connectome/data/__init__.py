"""Datasets: a data spec (`mnist`, `fashion-mnist`, `cifar10`, `imagenet:PATH`, `folder:PATH`) as
Splits, seeded subsets of them and batches.

    source     the DataSource base and the table of them: every fact about a kind of data is a
               question its source answers
    sources/   one module per kind (mnist, fashion_mnist, cifar10, folder, imagenet), registered on import
    specs      load_dataset: a spec resolved to Splits by its source
    tensors    ImageTensors (uint8 images in memory) and Normalization (to floats, as torchvision does)
    splits     Splits, subset, batches, default_workers, labels_of
    mnist      MNIST and Fashion-MNIST from IDX files;  cifar  CIFAR-10's binary release
    folders    image folders: folder:PATH (0..N-1), imagenet:PATH (wnid folders, ImageNet-1k indices)
    paths      the download cache and Debian's Fashion-MNIST
    decoded    an image folder's subsets decoded once into tensor files (--cache-calib)
    cifar_files, cifar_cache   CIFAR-10 as image files (a folder or a .tar.gz), decoded once and cached
    augment    random resized crops and flips of a batch (the learned mask's training views)
    fit        whether a model takes a dataset's samples: one sample, one line naming the layer
"""

from connectome.data.source import DATA_SOURCES, DataSource, data_source_of
from connectome.data.specs import KINDS, check_spec, load_dataset
from connectome.data.splits import Splits, batches, default_workers, labels_of, subset
from connectome.data.tensors import ImageTensors, Normalization

__all__ = ["load_dataset", "check_spec", "DataSource", "DATA_SOURCES", "data_source_of", "subset",
           "batches", "Splits", "ImageTensors", "Normalization", "default_workers", "labels_of", "KINDS"]
