"""Metrics of an evaluation (jaxtrain.training.metrics): top-k accuracy against numpy, the confusion matrix's counts,
sums exact over batches, a function of one's own, the names refused in one line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrain import MLP, ArrayDataset, ConfusionMatrix, DataLoader, TopKAccuracy, create_train_state, evaluate, sgd
from jaxtrain.training import metrics as metrics_module
from jaxtrain.training.step import forward


def _state_and_data(n=203, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 6, 6, 1), np.float32)
    labels = rng.integers(0, classes, n).astype(np.int32)
    state = create_train_state(MLP(hidden=(16,), num_classes=classes), sgd(0.1), images[:1], seed=seed)
    return state, images, labels


def _logits(state, images):
    return np.asarray(forward(state, state.params, images, train=False)[0], np.float64)


@pytest.mark.quick
@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_k_accuracy_equals_numpys_over_batches_with_a_short_last_one(k):
    state, images, labels = _state_and_data()
    loader = DataLoader(ArrayDataset(images, labels), batch_size=64)  # 203 = 3 × 64 + 11: a padded last batch
    result = evaluate(state, loader, metrics=[f"top{k}"])
    top = np.argsort(-_logits(state, images), axis=-1)[:, :k]  # the reference: the k largest, by sorting
    expected = np.sum(np.any(top == labels[:, None], axis=-1))
    assert result[f"top{k}_accuracy"] == expected / len(labels)
    assert result["count"] == len(labels)
    if k == 1:
        assert result["top1_accuracy"] == result["accuracy"]


@pytest.mark.quick
def test_the_confusion_matrix_counts_each_class_and_its_trace_is_the_correct_count():
    state, images, labels = _state_and_data(classes=4)
    loader = DataLoader(ArrayDataset(images, labels), batch_size=50)
    result = evaluate(state, loader, metrics=("confusion_matrix", "top2"))
    matrix = result["confusion_matrix"]
    assert matrix.shape == (4, 4) and matrix.dtype == np.int64
    np.testing.assert_array_equal(matrix.sum(1), np.bincount(labels, minlength=4))  # rows: the true classes
    predicted = _logits(state, images).argmax(-1)
    np.testing.assert_array_equal(matrix.sum(0), np.bincount(predicted, minlength=4))  # columns: the predictions
    assert np.trace(matrix) == round(result["accuracy"] * len(labels)) == np.sum(predicted == labels)
    assert matrix.sum() == len(labels)  # the padding of the last batch counted nowhere


@pytest.mark.quick
def test_a_function_of_ones_own_is_averaged_per_example_not_per_batch():
    state, images, labels = _state_and_data()

    def first_logit(logits, labels):
        return logits[:, 0]

    sizes = [evaluate(state, DataLoader(ArrayDataset(images, labels), batch_size=b), metrics=[first_logit]) for b in (7, 64, 203)]
    expected = _logits(state, images)[:, 0].mean()
    for result in sizes:
        assert result["first_logit"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.quick
def test_the_metrics_are_computed_in_the_compiled_step_and_compile_once(count_compiles):
    state, images, labels = _state_and_data()
    loader = DataLoader(ArrayDataset(images, labels), batch_size=64)
    evaluate(state, loader, metrics=[TopKAccuracy(3), ConfusionMatrix()])
    with count_compiles() as compiles:
        evaluate(state, loader, metrics=["top3", "confusion_matrix"])  # the same metrics, by name
    assert compiles() == 0


@pytest.mark.quick
def test_unknown_or_impossible_metrics_are_refused_in_one_line():
    state, images, labels = _state_and_data(classes=4)
    loader = DataLoader(ArrayDataset(images, labels), batch_size=64)
    with pytest.raises(ValueError) as info:
        evaluate(state, loader, metrics=["f1"])
    assert str(info.value) == "metrics: 'f1'; expected 'accuracy', 'topK' (e.g. 'top5'), 'confusion_matrix', a Metric or a function"
    with pytest.raises(ValueError) as info:
        evaluate(state, loader, metrics=["top5"])
    assert str(info.value) == "top5_accuracy: k=5 but the model gives 4 classes; expected k <= 4"
    with pytest.raises(ValueError, match=r"^TopKAccuracy\(k=0\); expected a positive integer$"):
        TopKAccuracy(0)
    with pytest.raises(ValueError, match=r"^metrics: two named 'top2_accuracy'"):
        metrics_module.resolve(["top2", "top_2_accuracy"])
    assert metrics_module.resolve(["accuracy"]) == ()  # always given


@pytest.mark.quick
def test_a_metrics_sums_leave_padding_out():
    logits = jnp.asarray([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    labels, mask = jnp.asarray([2, 2]), jnp.asarray([True, False])
    assert int(TopKAccuracy(1).sums(logits, labels, mask)) == 1
    np.testing.assert_array_equal(ConfusionMatrix().sums(logits, labels, mask), [[0, 0, 0], [0, 0, 0], [0, 0, 1]])
    assert int(metrics_module.get("accuracy").sums(logits, labels, ~mask)) == 0


def test_fit_records_the_metrics_of_each_evaluation_and_early_stopping_may_monitor_them():
    from jaxtrain import EarlyStopping, adam, fit

    state, images, labels = _state_and_data(n=160)
    train = DataLoader(ArrayDataset(images[:120], labels[:120]), batch_size=16, shuffle=True)
    val = DataLoader(ArrayDataset(images[120:], labels[120:]), batch_size=16)  # 40 = 2 × 16 + 8
    state = create_train_state(MLP(hidden=(16,)), adam(1e-2), images[:1])
    early = EarlyStopping("val_top3_accuracy", patience=100, restore_best=False)
    state, history = fit(state, train, 2, {"val": val}, log=None, metrics=["top3", "confusion_matrix"], callbacks=[early])
    result = evaluate(state, val, metrics=["top3", "confusion_matrix"])
    assert history[-1]["val_top3_accuracy"] == result["top3_accuracy"] and early.mode == "max"
    assert history[-1]["val_confusion_matrix"] == result["confusion_matrix"].tolist()  # JSON: nested lists
    assert np.trace(history[-1]["val_confusion_matrix"]) == round(history[-1]["val_accuracy"] * 40)
    with pytest.raises(ValueError, match="^metrics: 'f1'"):
        fit(state, train, 1, log=None, metrics=["f1"])
