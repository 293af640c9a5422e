"""The primer's PyTorch program as one file that imports torch and numpy only: the PyTorch side of the
whole-job benchmark (``jaxtrain.compare.job``), which times it as a fresh process from start to its printed
accuracy. It imports nothing of jaxtrain (nor JAX), so its process pays only for what a PyTorch user's does.

    python jaxtrain/compare/primer_script.py --model mlp --epochs 10 --dataset mnist --data-dir DIR
    python jaxtrain/compare/primer_script.py --model cnn --epochs 3 --schedule cosine --dataset digits

It does the work that ``python -m jaxtrain train`` does: the primer's loop (``MyDataset``, ``DataLoader``
with ``shuffle=True``, ``zero_grad``/``backward``/``step``, ``running_loss += loss.item()``), ``MyModel`` or
the torch twin of ``jaxtrain.nn.linen.CNN``, Adam, the learning-rate schedule that jaxtrain's CLI gives the
model, and an evaluation of the test set after every epoch. It prints jaxtrain's lines: ``Epoch N, Loss: L``
when an epoch's training ends (before its evaluation), and ``Accuracy on the N test images: A%`` once the
last evaluation is done. ``--report`` writes the history (per epoch ``seconds`` of training and
``test_accuracy``). Where CUDA is available it trains there, moving each batch with ``.to(device)``.
"""

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


def load(dataset: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """``jaxtrain.sources.registry.load``'s arrays for "mnist" (IDX files in ``data_dir``) and "digits": images
    (N, 1, H, W) float32 in [0, 1] (channels first, as torch's convolutions expect), labels (N,) int64."""
    if dataset == "digits":  # jaxtrain.sources.registry.load_digits: a seeded shuffle, a quarter for the test split
        from sklearn.datasets import load_digits

        digits = load_digits()
        order = np.random.default_rng(0).permutation(len(digits.target))
        n_test = round(len(order) * 0.25)
        chosen = order[n_test:] if split == "train" else order[:n_test]
        images, labels, scale = digits.images[chosen], digits.target[chosen], 16
    else:
        prefix = "train" if split == "train" else "t10k"
        images, labels = (_read_idx(Path(data_dir), f"{prefix}-{kind}") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))
        scale = 255
    images = np.asarray(images, np.float32)[:, None] / np.float32(scale)
    return images, np.asarray(labels, np.int64)


def _read_idx(folder: Path, name: str) -> np.ndarray:
    """One MNIST IDX file, gzipped or not, as a uint8 array of its header's shape."""
    path = folder / name if (folder / name).exists() else folder / f"{name}.gz"
    raw = path.read_bytes()
    raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


class MyDataset(Dataset):
    def __init__(self, data, labels):
        self.data = data
        self.labels = labels

    def __len__(self):
        return len(self.data)

    def __getitem__(self, idx):
        return self.data[idx], self.labels[idx]


class MyModel(nn.Module):
    """The primer's model: Linear(784, 256) → ReLU → Linear(256, 10)."""

    def __init__(self, in_features: int, num_classes: int = 10):
        super().__init__()
        self.in_features = in_features
        self.fc1 = nn.Linear(in_features, 256)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x):
        x = x.view(-1, self.in_features)
        return self.fc2(self.relu(self.fc1(x)))


class CNN(nn.Module):
    """``jaxtrain.nn.linen.CNN``'s torch twin, which ``jaxtrain.compare.torch_side`` uses too: [Conv 3×3 (no bias) →
    BatchNorm2d → ReLU → MaxPool 2] × 3, flatten, Dropout, Linear → ReLU → Dropout, Linear."""

    def __init__(self, image_size, channels=(32, 64, 128), hidden=(128,), num_classes: int = 10, dropout: float = 0.25,
                 in_channels: int = 1):
        super().__init__()
        layers, width = [], in_channels
        for out in channels:
            layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            width = out
        self.features = nn.Sequential(*layers)
        height, across = (image_size, image_size) if isinstance(image_size, int) else image_size  # a side, or (H, W)
        width *= (height // 2 ** len(channels)) * (across // 2 ** len(channels))
        head = [nn.Dropout(dropout)]
        for out in hidden:
            head += [nn.Linear(width, out), nn.ReLU(), nn.Dropout(dropout)]
            width = out
        self.head = nn.Sequential(*head, nn.Linear(width, num_classes))

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--dataset", choices=["mnist", "digits"], default="digits")
    parser.add_argument("--data-dir", default=None, help="mnist: the folder of its IDX files")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    parser.add_argument("--schedule", choices=["constant", "cosine"], default="constant",
                        help="cosine: CosineAnnealingLR to 0 over the run, stepped after every optimizer step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path, default=None, help="write the history as JSON here")
    args = parser.parse_args()
    if args.dataset == "mnist" and not args.data_dir:
        parser.error("--dataset mnist needs --data-dir, the folder of its IDX files")
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    (train_x, train_y), (test_x, test_y) = (load(args.dataset, split, args.data_dir) for split in ("train", "test"))
    dataloader = DataLoader(MyDataset(torch.from_numpy(train_x), torch.from_numpy(train_y)), batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(MyDataset(torch.from_numpy(test_x), torch.from_numpy(test_y)), batch_size=args.eval_batch_size)
    model = (MyModel(train_x[0].size) if args.model == "mlp" else CNN(train_x.shape[-1])).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * len(dataloader))
                 if args.schedule == "cosine" else None)

    def test() -> float:
        model.eval()
        correct = 0
        with torch.no_grad():
            for inputs, labels in test_loader:
                outputs = model(inputs.to(device))
                correct += (torch.max(outputs, 1)[1] == labels.to(device)).sum().item()
        return correct / len(test_y)

    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        start = time.perf_counter()
        running_loss = 0.0
        for inputs, labels in dataloader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(model(inputs), labels)
            loss.backward()
            optimizer.step()
            if scheduler:
                scheduler.step()
            running_loss += loss.item()
        seconds = time.perf_counter() - start
        print(f"Epoch {epoch}, Loss: {running_loss / len(dataloader)}")
        history.append({"epoch": epoch, "train_loss": running_loss / len(dataloader), "seconds": seconds, "test_accuracy": test()})
    # The last epoch's evaluation is the final one: nothing runs between it and this line.
    print(f"Accuracy on the {len(test_y)} test images: {100 * history[-1]['test_accuracy']:.2f}%")
    if args.report:
        report = {"model": args.model, "dataset": args.dataset, "device": str(device), "torch": torch.__version__,
                  "history": history, "test_accuracy": history[-1]["test_accuracy"], "eval_seconds": 0.0}
        args.report.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
