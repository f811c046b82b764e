import numbers

import numpy as np


def stratified_subset(labels, ratio, seed=0):
    """Indices of a class-stratified random subset of `labels`.

    Each class `c` with `n_c` examples keeps `max(1, floor(ratio * n_c + 0.5))`
    of them, drawn without replacement. The draw for each class is a prefix of
    one seeded permutation of that class, so for a fixed `seed` the subsets are
    nested: the subset at `ratio=0.1` lies inside the one at `ratio=0.5`.

    Args:
        labels: 1-D integer array of class ids.
        ratio: float in `(0, 1]`, the fraction of each class to keep.
        seed: int, seed of the draw. The same `labels`, `ratio` and `seed`
            always give the same indices.

    Returns:
        Sorted 1-D int64 NumPy array of indices into `labels`.

    Example:

    >>> stratified_subset([0, 0, 0, 0, 1, 1], ratio=0.5, seed=0).shape
    (3,)
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(
            f"`labels` must be 1-D. Received: labels.shape={labels.shape}"
        )
    ratio = _check_ratio(ratio)
    classes, counts = np.unique(labels, return_counts=True)
    target = int(np.floor(ratio * len(labels) + 0.5))
    if target < len(classes):
        raise ValueError(
            f"ratio={ratio} keeps about {target} of {len(labels)} examples, "
            f"fewer than the {len(classes)} classes; a stratified subset "
            "needs at least one example per class. Use a larger ratio. "
            f"Received: ratio={ratio}"
        )
    rng = np.random.default_rng(seed)
    chosen = []
    for c, n in zip(classes, counts):
        keep = min(n, max(1, int(np.floor(ratio * n + 0.5))))
        members = np.flatnonzero(labels == c)
        chosen.append(members[rng.permutation(n)[:keep]])
    return np.sort(np.concatenate(chosen)).astype("int64")


def stratified_per_class(labels, per_class, seed=0):
    """Indices of `per_class` examples of each class (sorted int64).

    Like `stratified_subset`, each class's draw is a prefix of one seeded
    permutation of that class, so subsets of one seed are nested.

    Example:

    >>> stratified_per_class([0, 0, 0, 1, 1, 1], per_class=2, seed=0).shape
    (4,)
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    short = {int(c): int(n) for c, n in zip(classes, counts) if n < per_class}
    if short:
        raise ValueError(
            f"per_class={per_class} needs that many examples in every class. "
            f"Classes with fewer (class: count): {short}"
        )
    rng = np.random.default_rng(seed)
    chosen = [np.flatnonzero(labels == c)[rng.permutation(n)[:per_class]]
              for c, n in zip(classes, counts)]
    return np.sort(np.concatenate(chosen)).astype("int64")


def stratified_split(labels, ratio, seed=0):
    """Split indices in two stratified parts, both holding every class.

    Args:
        labels: 1-D integer array of class ids.
        ratio: float in `(0, 1)`, the fraction of each class sent to the
            second part (at least one example per class).
        seed: int, seed of the draw.

    Returns:
        Tuple `(first, second)` of sorted int64 index arrays.
    """
    labels = np.asarray(labels)
    ratio = _check_ratio(ratio)
    classes, counts = np.unique(labels, return_counts=True)
    if ratio >= 1.0 or np.any(counts < 2):
        small = {int(c): int(n) for c, n in zip(classes, counts) if n < 2}
        raise ValueError(
            "A stratified split needs `ratio` < 1 and at least 2 examples in "
            "every class, one for each part. Classes with fewer (class: "
            f"count): {small}. Received: ratio={ratio}"
        )
    rng = np.random.default_rng(seed)
    second = []
    for c, n in zip(classes, counts):
        keep = min(n - 1, max(1, int(np.floor(ratio * n + 0.5))))
        members = np.flatnonzero(labels == c)
        second.append(members[rng.permutation(n)[:keep]])
    second = np.sort(np.concatenate(second)).astype("int64")
    first = np.setdiff1d(np.arange(len(labels)), second).astype("int64")
    return first, second


def _check_ratio(ratio):
    """`ratio` as a float in (0, 1]. A bool is refused, not read as 1 or 0,
    and so is a string such as `"0.5"`."""
    if isinstance(ratio, (bool, np.bool_)):
        raise ValueError(f"ratio must be in (0, 1]; a bool is not a ratio. Received: ratio={ratio}")
    value = float(ratio) if isinstance(ratio, numbers.Real) else float("nan")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"ratio must be in (0, 1]. Received: ratio={ratio}")
    return value
