"""A backbone pretrained without labels: SimSiam on a dataset's unlabelled training pool.

The regime of issue "pretrained features": the classifier starts from
features learnt before it sees the labelled subset. The pretext task is the
project's own `MGRRegularizer(consistency="simsiam")` (projector, predictor,
stop-gradient targets) between two `ViewAugmentation` views of real pool
images; no label is read. Why SimSiam: it needs neither negatives nor a
momentum encoder, so it fits a small batch on a CPU, and its heads are the
ones PCR already uses.

    python benchmarks/pretrain.py --dataset=animals --image_size=28 --pretrain_steps=1500

Writes the backbone's weights to `<cache>/<name>.weights.h5` (reused by
`accuracy.py --backbone_init=simsiam_pool`) and prints a linear probe: the
test accuracy of a logistic regression on frozen features of a labelled
subset, pretrained against randomly initialised.
"""

import os
import time

import _common
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS


def _pretrainer(backbone, regularizer):
    import keras

    class SimSiamPretrainer(keras.Model):
        """Backbone features of two views; the loss is the regularizer's SimSiam term."""

        def __init__(self):
            super().__init__()
            self.backbone, self.regularizer = backbone, regularizer

        def call(self, images, training=False):
            return self.backbone(self.regularizer.views(images), training=training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                         training=True):
            return self.regularizer(y_pred)

    return SimSiamPretrainer()


def weights_path(cache, dataset, image_size, steps, seed):
    return os.path.join(cache, f"simsiam_{_common._slug(dataset)}_i{image_size}_p{steps}"
                               f"_s{seed}.weights.h5")


def pretrained_backbone(dataset, image_size, steps, seed, cache, data_dir=None,
                        batch_size=128, view_strength=2.0, learning_rate=1e-3):
    """`(backbone_fn, seconds)`: `backbone_fn(image_shape)` builds `small_cnn`
    and loads SimSiam weights pretrained on `dataset`'s whole training pool
    (labels unused) for `steps` steps, trained once and cached (seconds 0.0
    on a cache hit)."""
    import keras

    from keras_mgr import datasets
    from keras_mgr.backbones import small_cnn
    from keras_mgr.regularizer import MGRRegularizer

    path = weights_path(cache, dataset, image_size, steps, seed)
    seconds = 0.0
    if not os.path.exists(path):
        pool = datasets.load(dataset, image_size=image_size, data_dir=data_dir)
        keras.utils.set_random_seed(seed)
        backbone = small_cnn(pool.image_shape)
        augmentation = _common.view_augmentation(view_strength, pool.value_range, seed)
        model = _pretrainer(backbone, MGRRegularizer("simsiam", augmentation=augmentation,
                                                     value_range=pool.value_range))
        model.compile(optimizer=keras.optimizers.Adam(learning_rate))
        epochs = _common.epochs_for(len(pool.x_train), batch_size, steps)
        start = time.perf_counter()
        history = model.fit(pool.x_train, batch_size=batch_size, epochs=epochs, shuffle=True,
                            verbose=0)
        seconds = time.perf_counter() - start
        _common.log(f"SimSiam on {len(pool.x_train)} unlabelled images, {epochs} epochs: "
                    f"loss {history.history['loss'][0]:.3f} -> "
                    f"{history.history['loss'][-1]:.3f} ({seconds:.0f} s)")
        os.makedirs(cache, exist_ok=True)
        backbone.save_weights(path + ".tmp.weights.h5")
        os.replace(path + ".tmp.weights.h5", path)

    def backbone_fn(image_shape):
        backbone = small_cnn(image_shape)
        backbone.load_weights(path)
        return backbone

    return backbone_fn, seconds


def linear_probe(backbone, data):
    """Test accuracy of a logistic regression on `backbone`'s frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def features(x):
        return np.asarray(backbone.predict(x, batch_size=256, verbose=0))

    scale = StandardScaler().fit(features(data.x_train))
    probe = LogisticRegression(max_iter=2000).fit(scale.transform(features(data.x_train)),
                                                  data.y_train)
    return float(probe.score(scale.transform(features(data.x_test)), data.y_test))


def main(argv):
    del argv
    import keras

    from keras_mgr import datasets
    from keras_mgr.backbones import small_cnn

    backbone_fn, _ = pretrained_backbone(FLAGS.dataset, FLAGS.image_size, FLAGS.pretrain_steps,
                                         0, FLAGS.cache)
    for per_class in (10, 25):
        data = datasets.load(FLAGS.dataset, per_class=per_class, seed=0,
                             image_size=FLAGS.image_size)
        keras.utils.set_random_seed(0)
        scratch = linear_probe(small_cnn(data.image_shape), data)
        pretrained = linear_probe(backbone_fn(data.image_shape), data)
        print(f"linear probe, {per_class}/class: random init {scratch:.4f}, "
              f"SimSiam {pretrained:.4f}")


if __name__ == "__main__":
    _common.define("string", "dataset", "animals", "Dataset whose training pool is used.")
    _common.define("integer", "image_size", 28, "Image height and width.")
    flags.DEFINE_integer("pretrain_steps", 1500, "SimSiam steps (batch 128).")
    flags.DEFINE_string("cache", "runs/generators", "Folder of cached weights.")
    app.run(main)
