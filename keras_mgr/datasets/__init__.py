"""Small labelled image datasets for small-data experiments.

`load()` returns a `Dataset` whose training split is a stratified, seeded
subset (`ratio`) of the source's training split; the test split is fixed.
"""

from keras_mgr.datasets.dataset import Dataset
from keras_mgr.datasets.load import TFDS_NAMES, load
from keras_mgr.datasets.stratified_subset import (
    stratified_per_class,
    stratified_split,
    stratified_subset,
)

__all__ = ["Dataset", "TFDS_NAMES", "load", "stratified_per_class", "stratified_split",
           "stratified_subset"]
