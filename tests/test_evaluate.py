"""evaluate(): the top-1 among the classes present beside the top-1 over every output."""

import torch
from torch.utils.data import Subset

from connectome.data import ImageTensors, labels_of
from connectome.evaluate import evaluate


class Fixed(torch.nn.Module):
    """Logits read off the input: each image is its own logit vector."""

    def forward(self, x):
        return x.flatten(1)


def test_top1_among_present_classes():
    # Five outputs; the labels use classes 1 and 3 only. Image 0: class 1, but output 4 is highest and
    # output 1 beats 3, so it is wrong 5-way and right among {1, 3}. Image 1: class 3, right both ways.
    # Image 2: class 1, output 3 beats 1: wrong both ways.
    logits = torch.tensor([[0, 2, 0, 1, 9], [0, 1, 0, 5, 0], [0, 1, 0, 2, 0]], dtype=torch.float32)
    data = torch.utils.data.TensorDataset(logits.view(3, 1, 1, 5), torch.tensor([1, 3, 1]))
    everything = evaluate(Fixed(), data, batch_size=2)
    assert everything.top1 == 100 / 3 and everything.top1_present is None
    assert "top1_present" not in everything.as_dict()
    present = evaluate(Fixed(), data, batch_size=2, classes=torch.tensor([1, 3]))
    assert present.top1 == everything.top1 and present.loss == everything.loss
    assert present.top1_present == 200 / 3 and present.as_dict("eval_")["eval_top1_present"] == 200 / 3


def test_labels_of_reads_labels_without_images():
    images = ImageTensors(torch.zeros(5, 1, 2, 2, dtype=torch.uint8), torch.tensor([4, 3, 2, 1, 0]))
    assert labels_of(images).tolist() == [4, 3, 2, 1, 0]

    class Folder(torch.utils.data.Dataset):  # ImageFolder's shape: `targets`, and images that must not be read
        targets = [7, 8, 9]

        def __len__(self):
            return 3

        def __getitem__(self, i):
            raise AssertionError("an image was decoded")

    assert labels_of(Subset(Folder(), [2, 0])).tolist() == [9, 7]
