"""Training, the primer's loop: one compiled step (``step``: ``TrainState``, ``train_step``, ``eval_step``,
``predict``), evaluation over a loader and its metrics (``evaluation``, ``metrics``), the loop over epochs
(``fit``) and how it feeds its calls (``feeding``), the loss (``losses``), torch's optimizers and schedules
(``optim``, ``schedules``, with the checks they share in ``arguments``), code of one's own in the loop
(``callbacks``, and ``monitors``: what a run shows as it goes), and a scheduler's SIGTERM (``preemption``)."""

from jaxtrain.training.callbacks import Callback, EarlyStopping, LambdaCallback, ReduceLROnPlateau, TargetAccuracy
from jaxtrain.training.evaluation import evaluate
from jaxtrain.training.fit import compile_fit, fit, plan_calls
from jaxtrain.training.losses import cross_entropy
from jaxtrain.training.metrics import ConfusionMatrix, Mean, Metric, TopKAccuracy
from jaxtrain.training.monitors import TensorBoard
from jaxtrain.training.optim import accumulate_gradients, adam, adamw, adjustable_lr, clip_grad_norm, sgd
from jaxtrain.training.preemption import Preempted
from jaxtrain.training.schedules import Plateau, schedule, scheduled
from jaxtrain.training.step import TrainState, create_train_state, eval_step, predict, train_step

__all__ = [
    "Callback", "ConfusionMatrix", "EarlyStopping", "LambdaCallback", "Mean", "Metric", "Plateau", "Preempted", "ReduceLROnPlateau",
    "TargetAccuracy", "TensorBoard", "TopKAccuracy", "TrainState", "accumulate_gradients", "adam", "adamw", "adjustable_lr",
    "clip_grad_norm", "compile_fit", "create_train_state", "cross_entropy", "eval_step", "evaluate", "fit", "plan_calls",
    "predict", "schedule", "scheduled", "sgd", "train_step",
]
