"""tf.distribute.MirroredStrategy on two logical CPU devices (see conftest)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny

import keras_mgr


def strategy(cross_device_ops="one_device"):
    # Most tests reduce to one device (cheapest on CPU); the default collective
    # all-reduce is tested to give the same weights below.
    if cross_device_ops == "one_device":
        cross_device_ops = tf.distribute.ReductionToOneDevice()
    return tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"],
                                          cross_device_ops=cross_device_ops)


def build(mode, norm=None, scope=None, **kwargs):
    return tiny.wrapped(mode, norm, scope=scope, optimizer=lambda: keras.optimizers.SGD(0.1),
                        **kwargs)


def per_replica(s, *halves):
    """A per-replica value: replica r gets halves[r]."""
    return s.experimental_distribute_values_from_function(
        lambda ctx: halves[ctx.replica_id_in_sync_group])


def split(tree):
    first = tf.nest.map_structure(lambda t: t[: len(t) // 2], tree)
    second = tf.nest.map_structure(lambda t: t[len(t) // 2:], tree)
    return first, second


# mgr is slow here: test_default_mirrored_strategy_runs_the_finder_modes
# trains it under this strategy, and metagda takes the same finder path.
@pytest.mark.parametrize("mode", [pytest.param(m, marks=[pytest.mark.slow] * (m == "mgr"))
                                  for m in keras_mgr.MODES])
def test_every_mode_trains_under_mirrored_strategy(mode):
    """Three steps of 8 examples per replica; in the finder modes each is a
    meta step: the first leaves the finder alone (the validation buffer of 8
    is still empty), the next two move it."""
    finder_mode = mode in ("metagda", "mgr")
    x, y = tiny.data(32)
    model = build(mode, norm="keras", scope=strategy(),
                  **({"meta_every": 1} if finder_mode else {}))
    finder = [v.numpy() for v in model.finder.weights] if finder_mode else []
    model.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0)
    for a, b in zip(model.finder.weights if finder_mode else [], finder):
        np.testing.assert_array_equal(a.numpy(), b)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert all(np.isfinite(v[-1]) for v in history.values()), history
    assert model.predict(x, verbose=0).shape == (32, 3)
    assert (model.finder_optimizer is not None) == finder_mode
    if finder_mode:
        # Under tf.distribute a skipped update applies zero gradients (it
        # still counts); the finder's weights move on the two later steps.
        assert model.finder_optimizer.iterations.numpy() >= 2
        assert any(not np.allclose(a.numpy(), b)
                   for a, b in zip(model.finder.weights, finder))
        assert np.isfinite(history["meta_loss"][-1])


def test_base_step_equals_single_device_on_the_global_batch():
    x, y = tiny.data(16)
    single = build("base")
    single.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    mirrored = build("base", scope=strategy())
    history = mirrored.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert history.history["ce_loss"][0] == pytest.approx(
        single.history.history["ce_loss"][0], rel=1e-5)
    for a, b in zip(mirrored.weights, single.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["pcr", "gda"])
def test_synthetic_loss_and_gradient_scaled_per_replica(mode):
    """With the same draws split across replicas, the all-reduced gradient and
    the summed loss equal the single-device ones on the global batch."""
    s = strategy()
    model = build(mode, scope=s)
    x, y = tiny.data(16)
    draws = model.objective.draw(16)
    theta = model.classifier_variables

    def loss_and_grads(x, y, draws):
        values = [v.value for v in theta]
        with tf.GradientTape() as tape:
            tape.watch(values)
            total, _ = model.objective.train_loss(values, [], [], x, y, draws)
        return total, tape.gradient(total, values)

    total, grads = loss_and_grads(x, y, draws)

    def replica_fn(x, y, draws):
        total, grads = loss_and_grads(x, y, draws)
        ctx = tf.distribute.get_replica_context()
        return ctx.all_reduce("sum", total), ctx.all_reduce("sum", grads)

    x2, y2, d2 = (per_replica(s, *split(t)) for t in (x, y, draws))
    m_total, m_grads = s.run(replica_fn, args=(x2, y2, d2))
    m_total = s.experimental_local_results(m_total)[0]
    m_grads = s.experimental_local_results(m_grads)[0]
    assert float(m_total) == pytest.approx(float(total), rel=1e-5)
    for a, b in zip(m_grads, grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


def test_replicas_draw_different_latents():
    s = strategy()
    model = build("mgr", scope=s)
    z = s.run(tf.function(lambda: model.sampler(batch_size=4)[0]))
    z0, z1 = (t.numpy() for t in s.experimental_local_results(z))
    assert not np.allclose(z0, z1)


@pytest.mark.parametrize("meta_gradient,microbatches", [
    ("second_order", 1), ("second_order", 2), ("finite_difference", 1)])
def test_meta_gradient_is_the_mean_of_per_replica_lookaheads(meta_gradient, microbatches):
    """Chosen semantics: each replica looks ahead with its own batch's inner
    gradient; the finder step averages the replicas' meta-gradients (also with
    the micro-batches' loop running in each replica)."""
    s = strategy()
    model = build("mgr", scope=s, meta_gradient=meta_gradient,
                  meta_microbatches=microbatches)
    x, y = tiny.data(16)
    x_val, y_val = tiny.data(16, seed=1)
    draws = model.objective.draw(16)
    w = np.ones(8, "float32")
    phi = model.finder.trainable_variables
    rng = np.random.default_rng(0)
    for v in phi:
        v.assign(v.numpy() + 0.3 * rng.standard_normal(v.shape).astype("float32"))

    def meta_grads(x, y, draws, x_val, y_val):
        grads, *_ = model.objective.meta_step_gradients(
            model.classifier_variables, [], phi, x, y, draws, x_val, y_val, w)
        return grads

    halves = [split(t) for t in (x, y, draws, x_val, y_val)]
    expected = [np.mean([g0.numpy(), g1.numpy()], axis=0) for g0, g1 in zip(
        meta_grads(*(h[0] for h in halves)), meta_grads(*(h[1] for h in halves)))]

    def replica_fn(*args):
        return tf.distribute.get_replica_context().all_reduce("sum", meta_grads(*args))

    result = s.run(replica_fn, args=tuple(per_replica(s, *h) for h in halves))
    for a, b in zip(s.experimental_local_results(result)[0], expected):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-4, atol=1e-9)
    assert max(np.abs(b).max() for b in expected) > 0


@pytest.mark.parametrize("mode", ["mgr", pytest.param("metagda", marks=pytest.mark.slow)])
def test_default_mirrored_strategy_runs_the_finder_modes(mode):
    # The default MirroredStrategy on CPU devices uses a collective all-reduce,
    # with which the two optimizers' all-reduces once aborted ("Shape mismatch
    # in the collective"). With TF 2.21 it trains and gives the weights of the
    # reduction to one device, with or without the control dependency that
    # orders the finder's all-reduce after the main optimizer's (checked by
    # removing it), so that dependency is kept as a safeguard, not a fix.
    default = strategy(None)
    assert type(default.extended._cross_device_ops).__name__ == "CollectiveAllReduce"
    x, y = tiny.data(32)
    runs = []
    for scope in (default, strategy()):
        model = build(mode, norm="keras", scope=scope, meta_every=1)
        # 2 steps: the second is a finder update (the buffer of 8 is full).
        history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False).history
        runs.append(([v.numpy() for v in model.weights], history["meta_loss"][-1]))
    (collective, meta_c), (one_device, meta_o) = runs
    assert np.isfinite(meta_c) and meta_c == pytest.approx(meta_o, rel=1e-6)
    for a, b in zip(collective, one_device):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
