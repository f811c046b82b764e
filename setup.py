"""keras_mgr: meta generative regularization for Keras 3 (TensorFlow backend).

TensorFlow is deliberately *not* a hard requirement, so that installing into an
environment that already has TensorFlow (Colab, a GPU image) never pulls a second
one. Pick the extra that matches the machine:

    pip install -e ".[cpu]"     # CPU-only machine: tensorflow-cpu
    pip install -e .            # TensorFlow already installed (Colab)
    pip install -r requirements-gpu.txt   # GPU machine: tensorflow[and-cuda]
"""

import setuptools

setuptools.setup(
    name="keras_mgr",
    version="0.1.0",
    description="Meta generative regularization (MGR) for Keras 3 image classifiers.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["keras_mgr", "keras_mgr.*"]),
    python_requires=">=3.10",
    install_requires=[
        "keras>=3.10",
        "numpy",
        "absl-py",
        "scikit-learn",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu>=2.18"],
        "gpu": ["tensorflow[and-cuda]>=2.18"],
        # The JAX backend (KERAS_BACKEND=jax): jax 0.10 needs Python 3.11, 0.11 needs 3.12.
        "jax": ["jax[cpu]>=0.10"],
        # The PyTorch backend (KERAS_BACKEND=torch); make setup pins 2.13.0, the CPU
        # build the suite runs with.
        "torch": ["torch>=2.5"],
        "test": ["pytest", "pytest-xdist", "ruff", "tensorflow-datasets", "matplotlib",
                 "nbclient", "nbformat", "ipykernel", "tensorboard", "keras-cv",
                 "tokenizers", "sentencepiece"],  # = requirements-test.txt
        # keras-hub itself cannot be listed: an extra cannot say --no-deps, and its
        # metadata pulls tensorflow-text -> a second TensorFlow. It is in
        # requirements-nodeps.txt (pip install --no-deps -r requirements-nodeps.txt).
    },
)
