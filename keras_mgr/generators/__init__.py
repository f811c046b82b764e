"""Class-conditional generators for small labelled image datasets.

The generator protocol
----------------------
`keras_mgr.wrap()` accepts any generator that is:

- a `keras.Model` called as `generator([z, labels], training=False)`, with
  `z` float of shape `(batch, latent_dim)` and `labels` int32 class ids of
  shape `(batch,)`;
- returning images of shape `(batch, height, width, channels)` with values
  in `output_range`;
- carrying the Python attributes `latent_dim` (int), `num_classes` (int) and
  `output_range` (tuple `(low, high)`).

Anything else (a plain function, a generator taking one-hot labels) goes
through `GeneratorAdapter(fn, latent_dim, num_classes, output_range,
label_format="one_hot")`. A generator with a mapping network may also expose
`mapping([z, labels]) -> w` and `synthesis([w, labels]) -> images`; then
`wrap(..., latent_space="w")` lets the finder work in the intermediate space,
as the paper does with StyleGAN2's W.

`ConditionalGenerator` (built by `conditional_generator()`) is the reference
implementation; its attributes are constructor arguments, so they survive
`.keras` saving. `ConditionalGAN` trains one on a small dataset (hinge loss,
projection discriminator, spectral normalisation, DiffAugment) and exposes an
EMA copy, ready to freeze, as `gan.generator`.

Example:

>>> data = keras_mgr.datasets.load("digits", ratio=0.1)
>>> gan = keras_mgr.generators.ConditionalGAN(
...     num_classes=data.num_classes, image_shape=data.image_shape)
>>> gan.compile()
>>> history = gan.fit(data.train.shuffle(1000).batch(64), epochs=2, verbose=0)  # 500: usable
>>> generator = gan.generator
>>> 0.0 <= keras_mgr.generators.generator_quality(generator, data)["accuracy"] <= 1.0
True
"""

from keras_mgr.generators.conditional_gan import ConditionalGAN
from keras_mgr.generators.conditional_generator import ConditionalGenerator, conditional_generator
from keras_mgr.generators.diff_augment import DiffAugment
from keras_mgr.generators.generator_adapter import GeneratorAdapter
from keras_mgr.generators.projection_discriminator import ProjectionDiscriminator
from keras_mgr.generators.quality import frechet_distance, generator_quality

__all__ = [
    "ConditionalGAN",
    "ConditionalGenerator",
    "DiffAugment",
    "GeneratorAdapter",
    "ProjectionDiscriminator",
    "conditional_generator",
    "frechet_distance",
    "generator_quality",
]
