"""A data set's labels as class ids: which classes the training rows hold and each row's id.

Labels may be integers (class indices), booleans, strings or a `ClassLabel`. Strings and
booleans are numbered in sorted order, a ClassLabel keeps its own order, integers are their
own ids. A missing label (null, NaN, -1, "") is id -1: `trainer.tasks` drops that row.
Torch-free (pyarrow and numpy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.config import ConfigError, DataConfig


def label_values(table: Any, column: str) -> tuple[np.ndarray, np.ndarray]:
    """The label column as numpy values and its missing mask (null, NaN, -1 or "")."""
    import pyarrow as pa

    values = table.with_format("arrow")[column]
    if pa.types.is_floating(values.type):  # integers with gaps, as pandas reads a csv
        array = np.asarray(values.to_numpy(), dtype=np.float64)
        return array, np.isnan(array)
    null = np.asarray(values.is_null().to_numpy(), dtype=bool)
    if pa.types.is_integer(values.type):
        array = np.asarray(values.fill_null(-1).to_numpy(), dtype=np.int64)
        return array, null | (array == -1)
    if pa.types.is_boolean(values.type):
        return np.asarray(values.fill_null(False).to_numpy(), dtype=bool), null
    array = np.asarray(values.to_pylist(), dtype=object)
    return array, null | np.asarray([isinstance(v, str) and not v.strip() for v in array], dtype=bool)


def classes(cfg: DataConfig, table: Any, split: str, where: str) -> tuple[list[str] | None, int, str]:
    """Class names (None for plain integers), their number, and the label kind, from the training rows."""
    feature = table.features[cfg.label]
    names = getattr(feature, "names", None)  # a ClassLabel's, e.g. IMDB's neg/pos
    values, missing = label_values(table, cfg.label)
    present = values[~missing]
    if names:
        return [str(n) for n in names], len(names), "classlabel"
    if not len(present):
        raise ConfigError(f"data.label: column {cfg.label!r} of {where} has no label in its {split!r} split "
                          "(all missing: null or -1)")
    if present.dtype == bool:
        return [str(v) for v in sorted(set(present.tolist()))], len(set(present.tolist())), "bool"
    if present.dtype.kind in "iuf":
        if present.dtype.kind == "f" and not np.all(present == np.round(present)):
            raise ConfigError(f"data.label: column {cfg.label!r} of {where} holds fractional numbers "
                              f"(e.g. {present[present != np.round(present)][0]!r}); expected class indices, "
                              "strings or booleans")
        if present.min() < 0:
            raise ConfigError(f"data.label: column {cfg.label!r} of {where} must hold class indices 0..K-1 "
                              f"(-1 or null for a missing label), found {int(present.min())}")
        return None, int(present.max()) + 1, "int"
    kinds = sorted({type(v).__name__ for v in present})
    if kinds != ["str"]:
        raise ConfigError(f"data.label: column {cfg.label!r} of {where} holds {', '.join(kinds)} values; expected "
                          "integers (class indices), booleans, strings or a ClassLabel")
    return sorted(set(present.tolist())), len(set(present.tolist())), "str"


def encode(cfg: DataConfig, table: Any, split: str, where: str, names: list[str] | None, num_labels: int,
            kind: str) -> np.ndarray:
    """Class ids of every row of one of the data's splits (-1 where the label is missing)."""
    values, missing = label_values(table, cfg.label)
    ids = np.full(len(values), -1, dtype=np.int64)
    present = values[~missing]
    if kind in ("int", "classlabel"):
        if present.dtype == bool or present.dtype == object or present.dtype.kind not in "iuf":
            raise ConfigError(f"data.label: column {cfg.label!r} of {where} holds {present.dtype} values in split "
                              f"{split!r} and integers in the training split; expected one kind of label")
        known = set(range(num_labels))
        coded = present.astype(np.int64)
    else:
        lookup = {n: i for i, n in enumerate(names or [])}
        as_text = [str(v) for v in present.tolist()] if kind == "bool" else present.tolist()
        coded = np.asarray([lookup.get(v, -2) for v in as_text], dtype=np.int64)
        known = set(range(num_labels))
    bad = ~np.isin(coded, list(known))
    if bad.any():
        value = present[bad][0]
        value = value.item() if isinstance(value, np.generic) else value
        shown = names if names else [str(i) for i in range(num_labels)]
        raise ConfigError(f"data.label: split {split!r} of {where} has the label {value!r} ({int(bad.sum())} rows), "
                          f"never seen in training; the training labels are {', '.join(map(str, shown))}")
    ids[~missing] = coded
    return ids
