"""The training run that tests/test_multiworker.py compares across strategies.

Imported, `train(mode, strategy)` trains a tiny model a few steps under any
strategy and returns its per-step and per-epoch logs and every local
replica's weights. Run as a script it is one worker of a
`MultiWorkerMirroredStrategy` cluster (`TF_CONFIG` in its environment, set
by the test before Python starts):

    python multiworker_worker.py OUT_DIR base,pcr,mgr [SEED [LEARNING_RATE]]

and writes `OUT_DIR/<mode>-worker<index>.npz` for each mode (every worker
writes its own file: its replica's weights hold per-replica state).

The data is one `tf.data.Dataset` batched by the global batch with
`auto_shard_policy = DATA`: every worker reads the same file-less dataset,
`experimental_distribute_dataset` rebatches each global batch into
per-replica batches and worker i keeps the i-th of them. So replica r gets
rows [8r, 8r + 8) of each global batch of 16, as replica r of a one-process
`MirroredStrategy` does (the test checks the first batch per replica).
"""

import os
import signal
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tiny  # noqa: E402

import keras_mgr  # noqa: E402

EXAMPLES, GLOBAL_BATCH, EPOCHS = 32, 16, 2  # 2 steps per epoch, 4 in all


def dataset():
    x, y = tiny.data(EXAMPLES)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


class _StepLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = {}

    def on_train_batch_end(self, batch, logs=None):
        for key, value in (logs or {}).items():
            self.steps.setdefault(key, []).append(float(np.asarray(value)))


def _local(strategy, variable):
    """The variable's value on each local replica (one array per replica)."""
    values = strategy.experimental_local_results(getattr(variable, "value", variable))
    values = [v.numpy() for v in values]
    n = len(strategy.extended.worker_devices)
    return values if len(values) == n else values * n


def plain_fit_error(strategy):
    """'' if a plain Keras model's `fit` trains one step under `strategy`, else
    the exception it raised (Keras 3.15: keras-team/keras#20585, which
    MGRModel works around itself: keras_mgr/multi_worker.py)."""
    keras.utils.set_random_seed(0)
    with strategy.scope():
        inputs = keras.Input((8, 8, 1))
        model = keras.Model(inputs, keras.layers.Dense(3)(tiny.backbone()(inputs)))
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    try:
        model.fit(dataset().take(1), verbose=0)
    except Exception as error:  # noqa: BLE001 -- reported, not handled
        return f"{type(error).__name__}: {str(error)[:300]}"
    return ""


def train(mode, strategy, seed=0, learning_rate=0.1, epochs=EPOCHS):
    """Trains `mode` under `strategy` (2 steps an epoch); returns a flat dict
    of arrays: `step/<log>` and `epoch/<log>`; `replica_ids` and `first_x`
    (the first batch's images), per local replica; `weights/<r>/<i>`, the
    i-th of `model.weights` on local replica r, and their `weight_paths`;
    in the finder modes also `finder_initial/<i>` and `finder_final/<i>`."""
    keras.utils.set_random_seed(0)
    finder = dict(meta_every=1, meta_batch_size=8, finder_hidden_dim=8) if mode in (
        "metagda", "mgr") else {}
    with strategy.scope():
        # BN momentum 0.05: its statistics converge within 2 steps (no warning).
        model = keras_mgr.wrap(tiny.backbone(norm="keras", momentum=0.05), tiny.generator(),
                               mode=mode, seed=seed, **finder)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate))
    result = {}
    ids = strategy.run(lambda: tf.distribute.get_replica_context().replica_id_in_sync_group)
    result["replica_ids"] = np.array([int(i) for i in strategy.experimental_local_results(ids)])
    first = next(iter(strategy.experimental_distribute_dataset(dataset())))
    result["first_x"] = np.stack([x.numpy() for x in strategy.experimental_local_results(
        first[0])])
    if model.finder is not None:
        for i, v in enumerate(model.finder.weights):
            result[f"finder_initial/{i}"] = _local(strategy, v)[0]
    steps = _StepLogs()
    history = model.fit(dataset(), epochs=epochs, verbose=0, callbacks=[steps]).history
    for key, values in steps.steps.items():
        result[f"step/{key}"] = np.array(values)
    for key, values in history.items():
        result[f"epoch/{key}"] = np.array(values, dtype="float64")
    for key, value in model.evaluate(dataset(), verbose=0, return_dict=True).items():
        result[f"epoch/evaluate_{key}"] = np.array([value], dtype="float64")
    for i, v in enumerate(model.weights):
        for r, value in enumerate(_local(strategy, v)):
            result[f"weights/{r}/{i}"] = value
    if model.finder is not None:
        for i, v in enumerate(model.finder.weights):
            result[f"finder_final/{i}"] = _local(strategy, v)[0]
    result["weight_paths"] = np.array([v.path for v in model.weights])
    return result


def main(out_dir, modes, seed=0, learning_rate=0.1):
    keras.config.disable_traceback_filtering()  # full tracebacks in the worker logs
    communication = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING,
        timeout_seconds=120)  # a collective whose peer died fails, not hangs
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=communication)
    index = strategy.cluster_resolver.task_id
    with open(os.path.join(out_dir, f"plain_fit-worker{index}.txt"), "w") as f:
        f.write(plain_fit_error(strategy))
    for mode in modes.split(","):
        result = train(mode, strategy, seed=int(seed), learning_rate=float(learning_rate))
        np.savez(os.path.join(out_dir, f"{mode}-worker{index}.npz"), **result)
        print(f"worker {index}: {mode} done", flush=True)


if __name__ == "__main__":
    # Bounded even if the test that started it is killed: SIGALRM ends it.
    signal.alarm(int(os.environ.get("MULTIWORKER_WORKER_TIMEOUT", "600")))
    main(*sys.argv[1:])
