"""The PyTorch primer's MNIST program, step for step, in JAX with jaxtrain.

    python examples/mnist_mlp.py                                  # MNIST, downloaded once into a cache
    python examples/mnist_mlp.py --data-dir path/to/mnist         # MNIST from IDX files in a folder
    python examples/mnist_mlp.py --dataset digits                 # offline: scikit-learn's digits

Each comment names the PyTorch line that the code below it replaces.
"""

import argparse

import jax.numpy as jnp

import jaxtrain
from jaxtrain import ArrayDataset, DataLoader, MLP, adam, create_train_state, train_step

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--dataset", choices=["mnist", "digits"], default="mnist")
parser.add_argument("--data-dir", default=None, help="a folder with MNIST's IDX files (default: downloaded once into $JAXTRAIN_DATA or ~/.cache/jaxtrain)")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--dry-run", action="store_true", help="one epoch on 512 examples, to check that it runs")
args = parser.parse_args()

# 1. Data. torch: dataset = MyDataset(data, labels); dataloader = DataLoader(dataset, batch_size=32, shuffle=True)
if args.dataset == "mnist":
    (train_x, train_y), (test_x, test_y) = (jaxtrain.load_mnist(s, args.data_dir) for s in ("train", "test"))
else:
    (train_x, train_y), (test_x, test_y) = (jaxtrain.load_digits(s) for s in ("train", "test"))
if args.dry_run:
    train_x, train_y, args.epochs = train_x[:512], train_y[:512], 1
dataloader = DataLoader(ArrayDataset(train_x, train_y), batch_size=args.batch_size, shuffle=True)
test_loader = DataLoader(ArrayDataset(test_x, test_y), batch_size=1000)

# 2. Model. torch: model = MyModel()  (x.view(-1, 784) → Linear(784, 256) → ReLU → Linear(256, 10))
model = MLP(hidden=(256,), num_classes=10)

# 3. Loss and optimizer. torch: criterion = nn.CrossEntropyLoss()
#    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
# The loss, jaxtrain.cross_entropy, is the train state's default. The parameters live in the state,
# not in the model, so the optimizer is created alongside them.
state = create_train_state(model, adam(lr=args.lr), sample=train_x[:1])

# 4. Training. torch: model.train(); for epoch in range(10): for inputs, labels in dataloader:
#    optimizer.zero_grad(); outputs = model(inputs); loss = criterion(outputs, labels); loss.backward();
#    optimizer.step(); running_loss += loss.item()
# train_step does all of it in one compiled call and returns a new state: there is no gradient to zero,
# and the loss stays on the device until the end of the epoch (one read, not one per step).
for epoch in range(args.epochs):
    losses = []
    for inputs, labels in dataloader:
        state, metrics = train_step(state, (inputs, labels))
        losses.append(metrics["loss"])
    # torch: print(f"Epoch {epoch+1}, Loss: {running_loss/len(dataloader)}")
    print(f"Epoch {epoch+1}, Loss: {float(jnp.mean(jnp.stack(losses)))}")

# 5. Evaluation. torch: model.eval(); with torch.no_grad(): for inputs, labels in test_loader:
#    _, predicted = torch.max(model(inputs), 1); correct += (predicted == labels).sum().item()
# evaluate() calls the model with train=False and takes no gradient: nothing to switch off.
result = jaxtrain.evaluate(state, test_loader)
print(f"Accuracy on the test set: {100 * result['accuracy']:.2f}%")
