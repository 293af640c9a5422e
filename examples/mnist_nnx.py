"""The PyTorch primer's MNIST program with a Flax NNX model: a module that holds its weights, as torch's does.

    python examples/mnist_nnx.py                                  # MNIST, downloaded once into a cache
    python examples/mnist_nnx.py --data-dir path/to/mnist         # MNIST from IDX files in a folder
    python examples/mnist_nnx.py --dataset digits                 # offline: scikit-learn's digits
    python examples/mnist_nnx.py --dataset folder:data/pets       # your own images, one folder per class

Each comment names the PyTorch line that the code below it replaces; examples/mnist_mlp.py is the same
program with a Linen model.
"""

import argparse
import math

import jax.numpy as jnp
from flax import nnx

import jaxtrain
from jaxtrain import ArrayDataset, DataLoader, adam, create_train_state, train_step

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--dataset", default="mnist", help="mnist, digits, a tensorflow-datasets name, folder:PATH or npz:FILE")
parser.add_argument("--data-dir", default=None, help="mnist: a folder with its IDX files (default: downloaded once into $JAXTRAIN_DATA or "
                    "~/.cache/jaxtrain); a tensorflow-datasets name: its data folder")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--dry-run", action="store_true", help="one epoch on 512 examples, to check that it runs")
args = parser.parse_args()

# 1. Data. torch: dataset = MyDataset(data, labels); dataloader = DataLoader(dataset, batch_size=32, shuffle=True)
(train_x, train_y), (test_x, test_y) = (jaxtrain.load(args.dataset, s, args.data_dir) for s in ("train", "test"))
classes = jaxtrain.info(args.dataset, args.data_dir).num_classes
if args.dry_run:
    train_x, train_y, args.epochs = train_x[:512], train_y[:512], 1
dataloader = DataLoader(ArrayDataset(train_x, train_y), batch_size=args.batch_size, shuffle=True)
test_loader = DataLoader(ArrayDataset(test_x, test_y), batch_size=1000)


# 2. Model. torch: class MyModel(nn.Module), the same three layers. An NNX module is built with its
#    weights, so it takes the input's size and a seeded nnx.Rngs where torch uses the global generator.
class MyModel(nnx.Module):
    def __init__(self, in_features: int, num_classes: int, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(in_features, 256, rngs=rngs)  # self.fc1 = nn.Linear(784, 256)
        self.fc2 = nnx.Linear(256, num_classes, rngs=rngs)  # self.fc2 = nn.Linear(256, 10)

    def __call__(self, x):  # def forward(self, x):
        x = x.reshape(x.shape[0], -1)  # x = x.view(-1, 784)
        return self.fc2(nnx.relu(self.fc1(x)))


model = MyModel(math.prod(train_x.shape[1:]), classes, nnx.Rngs(0))  # model = MyModel()

# 3. Loss and optimizer. torch: criterion = nn.CrossEntropyLoss()
#    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
# The state takes the module apart (nnx.split): its nnx.Param arrays become the parameters that the
# optimizer updates, and a copy: `model` itself keeps its initial weights.
state = create_train_state(model, adam(lr=args.lr), sample=train_x[:1])

# 4. Training. torch: model.train(); for epoch in range(10): for inputs, labels in dataloader:
#    optimizer.zero_grad(); outputs = model(inputs); loss = criterion(outputs, labels); loss.backward();
#    optimizer.step(); running_loss += loss.item()
# train_step puts the module back together inside one compiled call, in NNX's model.train() mode, and
# returns a new state; the loss stays on the device until the end of the epoch.
for epoch in range(args.epochs):
    losses = []
    for inputs, labels in dataloader:
        state, metrics = train_step(state, (inputs, labels))
        losses.append(metrics["loss"])
    # torch: print(f"Epoch {epoch+1}, Loss: {running_loss/len(dataloader)}")
    print(f"Epoch {epoch+1}, Loss: {float(jnp.mean(jnp.stack(losses)))}")

# 5. Evaluation. torch: model.eval(); with torch.no_grad(): ... correct += (predicted == labels).sum().item()
# evaluate() runs the module in NNX's model.eval() mode and takes no gradient.
result = jaxtrain.evaluate(state, test_loader)
print(f"Accuracy on the test set: {100 * result['accuracy']:.2f}%")

# The trained weights as an NNX module again, to call as torch's model(x) is called.
trained = state.model.module(state.variables)
trained.eval()
print(f"Predicted classes of the first test images: {trained(test_x[:8]).argmax(-1).tolist()}")
