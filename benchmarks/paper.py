"""The paper-scale recipe (meant for a GPU): fine-grained sets, ResNet-18 at 224.

Yamaguchi et al. (arXiv 2307.13899) report MGR on six fine-grained datasets
(Cars, Aircraft, Birds, DTD, Flowers, Pets) with ResNet-18. This script runs
the same modes there, with the conditional generator trained on each training
subset only (at `--gan_image_size`, its output resized to the backbone input).

    # the project's ResNet-18 at 224x224, random init or a local weights file
    python benchmarks/paper.py --datasets=flowers,pets,dtd,birds,cars \\
        --backbone=resnet18 --weights=/path/resnet18_imagenet.weights.h5
    # any keras.applications model (ImageNet weights download where online)
    python benchmarks/paper.py --backbone=ResNet50 --weights=imagenet
    # a keras-cv class or a keras-hub preset, when installed
    python benchmarks/paper.py --backbone=keras_cv:ResNetBackbone \\
        --backbone_kwargs='{"stackwise_filters": [64, 128, 256, 512], ...}'
    python benchmarks/paper.py --backbone=keras_hub:resnet_18_imagenet

FGVC-Aircraft is not in TensorFlow Datasets: pass `--aircraft_dir=<folder>`
(train/<class>/*.jpg, test/<class>/*.jpg) or it is skipped with a message.
Writes `<out>/paper.csv` (resumable), `paper.md` and `paper.png` (the same
formats as accuracy.py), one table per dataset.
"""

import json
import os
import re

import _common
import accuracy  # defines the shared flags
from absl import app, flags

FLAGS = flags.FLAGS
FINE_GRAINED = ["cars", "aircraft", "birds", "dtd", "flowers", "pets"]
flags.DEFINE_list("datasets", FINE_GRAINED, "Datasets (keras_mgr.datasets.load names).")
flags.DEFINE_string("aircraft_dir", None, "Image folder of FGVC-Aircraft.")
flags.DEFINE_string("backbone", "resnet18",
                    "resnet18 (keras_mgr's), a keras.applications name (ResNet50, "
                    "EfficientNetB0, ...), keras_cv:<Class> or keras_hub:<preset>.")
flags.DEFINE_string("weights", None, "resnet18: a local .weights.h5; keras.applications: "
                    "'imagenet' or a path; keras_hub: 'imagenet' loads preset weights.")
flags.DEFINE_integer("width", 64, "resnet18 width (64 in the paper; tiny for smoke tests).")
flags.DEFINE_string("backbone_kwargs", "{}", "JSON keyword arguments of the backbone.")
flags.DEFINE_integer("gan_image_size", 64, "Resolution the generator is trained at.")
flags.DEFINE_bool("mixed_precision", False, "mixed_float16 (GPU).")

PAPER = {"image_size": 224, "batch_size": 64, "steps": 5000, "gan_steps": 20000,
         "ratios": ["0.1", "0.25", "0.5", "1.0"], "seeds": ["0", "1", "2"],
         "name": "paper"}


def make_backbone(name, image_shape, weights=None, width=64, **kwargs):
    """Images in [-1, 1] -> pooled features, for any supported backbone name."""
    import keras

    if name in ("resnet18", "resnet34"):
        from keras_mgr.backbones import resnet

        return resnet(int(name[-2:]), image_shape, width=width, weights=weights, **kwargs)
    inputs = keras.Input(image_shape)
    if name.startswith("keras_cv:"):
        try:
            import keras_cv
        except ImportError as e:
            raise ImportError("--backbone=keras_cv:... needs `pip install keras-cv`.") from e
        net = getattr(keras_cv.models, name.split(":", 1)[1])(
            input_shape=image_shape, **kwargs)
        h = keras.layers.Rescaling(0.5, offset=0.5)(inputs)  # [-1, 1] -> [0, 1]
        h = net(h)
    elif name.startswith("keras_hub:"):
        try:
            import keras_hub
        except ImportError as e:
            raise ImportError("--backbone=keras_hub:... needs `pip install keras-hub`.") from e
        net = keras_hub.models.Backbone.from_preset(
            name.split(":", 1)[1], load_weights=weights == "imagenet", **kwargs)
        h = net(keras.layers.Rescaling(0.5, offset=0.5)(inputs))
    else:
        module, constructor = _application(name)
        net = constructor(include_top=False, weights=weights, input_shape=image_shape,
                          pooling="avg", **kwargs)
        # keras.applications expect [0, 255] and their own preprocess_input.
        h = keras.layers.Rescaling(127.5, offset=127.5)(inputs)
        h = keras.layers.Lambda(module.preprocess_input, name="preprocess")(h)
        h = net(h)
    if len(h.shape) == 4:
        h = keras.layers.GlobalAveragePooling2D()(h)
    # A keras-hub preset may be a local folder: keep the model name valid.
    return keras.Model(inputs, h, name=re.sub(r"\W+", "_", name).strip("_"))


def _application(name):
    """`(module with preprocess_input, constructor)` of a keras.applications model."""
    import keras

    constructor = getattr(keras.applications, name, None)
    module = getattr(keras.applications,
                     getattr(constructor, "__module__", "").rsplit(".", 1)[-1], None)
    if constructor is None or not hasattr(module, "preprocess_input"):
        raise ValueError(
            f"Unknown backbone {name!r}: use resnet18, resnet34, a keras.applications "
            "model name (e.g. ResNet50), keras_cv:<Class> or keras_hub:<preset>. "
            f"Received: backbone={name!r}")
    return module, constructor


def trainer(backbone_name, weights, width, backbone_kwargs, jit_compile="auto"):
    """`train(data, generator, mode, ...)` for accuracy.run_grid with any backbone:
    `keras_mgr.demo.train_classifier` with the backbone chosen by name, and the
    synthetic images resized when the generator's resolution differs."""
    from keras_mgr.demo import train_classifier

    def backbone(image_shape):
        return make_backbone(backbone_name, image_shape, weights, width, **backbone_kwargs)

    def train(data, generator, mode, seed, epochs, batch_size, learning_rate, **options):
        resize = generator.output.shape[1] != data.image_shape[0]
        return train_classifier(data, generator, mode, seed, epochs, batch_size,
                                learning_rate, backbone=backbone, jit_compile=jit_compile,
                                resize_synthetic=resize, **options)

    return train


def run(s, datasets, backbone, weights=None, width=64, backbone_kwargs=None,
        gan_image_size=64, aircraft_dir=None):
    """Runs every dataset's grid; returns `{dataset: markdown table}`."""
    train = trainer(backbone, weights, width, backbone_kwargs or {})
    tables = {}
    name = s["name"]
    for dataset in datasets:
        source = dataset
        if dataset == "aircraft":
            if not aircraft_dir:
                _common.log("aircraft: skipped (not in TFDS; pass --aircraft_dir)")
                continue
            source = aircraft_dir
        d = dict(s, dataset=source, name=f"{name}_{dataset}")
        label = backbone if width == 64 or not backbone.startswith("resnet") else (
            f"{backbone}_w{width}")
        rows = accuracy.run_grid(d, backbone=label, train=train,
                                 gan_image_size=min(gan_image_size, s["image_size"]))
        tables[dataset] = accuracy.write_report(
            rows, s["out"], d["name"],
            f"{dataset}, {label} at {s['image_size']}px")
    with open(os.path.join(s["out"], name + ".md"), "w") as fh:
        fh.write("\n\n".join(tables.values()) + "\n")
    return tables


def main(argv):
    del argv
    s = accuracy.settings_from_flags()
    for key, value in PAPER.items():
        if not FLAGS[key].present and not FLAGS.quick:
            s[key] = value
    if not FLAGS["name"].present:
        s["name"] = "paper_quick" if FLAGS.quick else "paper"
    if FLAGS.mixed_precision:
        import keras

        keras.config.set_dtype_policy("mixed_float16")
    tables = run(s, FLAGS.datasets, FLAGS.backbone, FLAGS.weights, FLAGS.width,
                 json.loads(FLAGS.backbone_kwargs), FLAGS.gan_image_size,
                 FLAGS.aircraft_dir)
    print("\n\n".join(tables.values()))


if __name__ == "__main__":
    app.run(main)
