"""The PyTorch primer's MNIST program, as written: the imperative, object-oriented loop that jaxtrain rebuilds.

    python examples/pytorch_mnist.py --data-dir path/to/mnist         # MNIST from IDX files in a folder
    python examples/pytorch_mnist.py                                  # MNIST, downloaded once into a cache
    python examples/pytorch_mnist.py --dataset digits                 # offline: scikit-learn's digits

It reads the same data as the JAX side (examples/mnist_mlp.py) through jaxtrain's loaders; everything
else is plain PyTorch. Needs torch: pip install ".[compare]" in a checkout.
"""

import argparse

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

import jaxtrain

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--dataset", choices=["mnist", "digits"], default="mnist", help="the data")
parser.add_argument("--data-dir", default=None, help="a folder with MNIST's IDX files (default: downloaded once into $JAXTRAIN_DATA or ~/.cache/jaxtrain)")
parser.add_argument("--epochs", type=int, default=10, help="passes over the training data")
parser.add_argument("--batch-size", type=int, default=32, help="examples per step")
parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
parser.add_argument("--seed", type=int, default=0, help="seeds torch")
parser.add_argument("--dry-run", action="store_true", help="one epoch on 512 examples, to check that it runs")
args = parser.parse_args()
torch.manual_seed(args.seed)

# The same arrays as the JAX side: images (N, 28, 28, 1) float32 in [0, 1], labels (N,) int32.
if args.dataset == "mnist":
    (train_x, train_y), (test_x, test_y) = (jaxtrain.load_mnist(s, args.data_dir) for s in ("train", "test"))
else:
    (train_x, train_y), (test_x, test_y) = (jaxtrain.load_digits(s) for s in ("train", "test"))
if args.dry_run:
    train_x, train_y, args.epochs = train_x[:512], train_y[:512], 1
data, labels = torch.from_numpy(train_x), torch.from_numpy(train_y).long()
test_data, test_labels = torch.from_numpy(test_x), torch.from_numpy(test_y).long()
in_features = data[0].numel()  # 784 for MNIST


# 1. Data: a Dataset says how to get one example; the DataLoader batches and shuffles them.
class MyDataset(Dataset):
    def __init__(self, data, labels):
        self.data = data
        self.labels = labels

    def __len__(self):
        return len(self.data)

    def __getitem__(self, idx):
        return self.data[idx], self.labels[idx]


dataset = MyDataset(data, labels)
dataloader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True)
test_loader = DataLoader(MyDataset(test_data, test_labels), batch_size=1000)


# 2. Model: an object that owns its parameters.
class MyModel(nn.Module):
    def __init__(self):
        super(MyModel, self).__init__()
        self.fc1 = nn.Linear(in_features, 256)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x):
        x = x.view(-1, in_features)
        x = self.relu(self.fc1(x))
        x = self.fc2(x)
        return x


model = MyModel()

# 3. Loss and optimizer: the optimizer holds references to the model's parameters.
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

# 4. Training: gradients accumulate in .grad, so zero them; backward() fills them; step() updates in place.
model.train()
for epoch in range(args.epochs):
    running_loss = 0.0
    for inputs, labels in dataloader:
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
    print(f"Epoch {epoch+1}, Loss: {running_loss/len(dataloader)}")

# 5. Evaluation: eval mode, and no autograd graph.
model.eval()
correct = 0
total = 0
with torch.no_grad():
    for inputs, labels in test_loader:
        outputs = model(inputs)
        _, predicted = torch.max(outputs.data, 1)
        total += labels.size(0)
        correct += (predicted == labels).sum().item()
print(f"Accuracy on the test set: {100 * correct / total:.2f}%")
