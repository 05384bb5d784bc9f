"""Which rows a run trains on: the splits table turned into the readers and samplers of
the training loop.

Positives are views of one physical object (``positives: projections``) or two
augmentations of one image; :func:`object_groups` names the object behind each image so
:class:`~scripts.model.input_pipeline.PairSampler` can pair its projections.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scripts.model.input_pipeline import HDF5Images, PairSampler


def object_groups(table: pd.DataFrame) -> pd.Series:
    """Identity of the physical object behind each image: ``dataset:snapshot:object_id``.

    All projections of one object share it; they are the positives of ``"projections"``.
    """
    missing = [c for c in ("dataset", "object_id") if c not in table.columns]
    if missing:
        raise ValueError(f"splits table lacks column(s) {missing}; expected the prepare stage's "
                         "dataset/splits.parquet (dataset, row, object_id, snapshot, split, …)")
    snapshot = table["snapshot"].astype("Int64").astype(str) if "snapshot" in table.columns else "0"
    return table["dataset"].astype(str) + ":" + snapshot + ":" + table["object_id"].astype(str)


def split_table(splits: pd.DataFrame, datasets, split_names) -> pd.DataFrame:
    """Rows of ``splits`` in ``datasets`` and ``split_names``, with the ``group`` column that
    :class:`~scripts.model.input_pipeline.PairSampler` needs (sorted by dataset, row for stability)."""
    for col in ("dataset", "row", "split"):
        if col not in splits.columns:
            raise ValueError(f"splits table lacks column {col!r}; run the prepare stage")
    rows = splits[splits["dataset"].isin(list(datasets)) & splits["split"].isin(list(split_names))]
    rows = rows.sort_values(["dataset", "row"], kind="stable").reset_index(drop=True)
    out = rows[["dataset", "row"]].copy()
    out["group"] = object_groups(rows).to_numpy()
    return out


@dataclass
class TrainingRows:
    """The training and validation rows of a run, the reader of their stores and the
    training sampler, with the run's length in steps."""

    train_table: pd.DataFrame
    val_table: pd.DataFrame
    reader: HDF5Images
    sampler: PairSampler
    steps_per_epoch: int
    total_steps: int

    @property
    def store_names(self) -> list[str]:
        return self.reader.names

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.reader.image_shape)

    def train_images(self) -> tuple[np.ndarray, np.ndarray]:
        """``(store_index, row)`` of every training image, for ``reader.read``."""
        index = {name: i for i, name in enumerate(self.reader.names)}
        return (self.train_table["dataset"].map(index).to_numpy(np.int64),
                self.train_table["row"].to_numpy(np.int64))


def training_rows(params, stores: dict[str, str | Path], table: pd.DataFrame) -> TrainingRows:
    """:class:`TrainingRows` of ``train`` params (``TRAIN_SPLITS``, ``VALIDATION_SPLIT``,
    ``BATCH_SIZE``, ``POSITIVES``, ``SEED``, ``EPOCHS``, ``STEPS_PER_EPOCH``,
    ``CACHE_IMAGES``); raises ``ValueError`` naming the key or dataset at fault."""
    datasets = sorted(set(table["dataset"]))
    train_table = split_table(table, datasets, params.train_splits)
    val_table = split_table(table, datasets, [params.validation_split])
    if train_table.empty:
        raise ValueError(f"no rows in splits {list(params.train_splits)} of datasets {datasets}; "
                         "check train.TRAIN_SPLITS and the prepare stage's fractions")
    used = sorted(set(train_table["dataset"]) | set(val_table["dataset"]))
    missing = [name for name in used if name not in stores]
    if missing:
        raise ValueError(f"no image store given for dataset(s) {missing}")
    reader = HDF5Images({name: stores[name] for name in used}, cache=params.cache_images)
    sampler = PairSampler(train_table, reader.names, params.batch_size, params.positives, params.seed)
    steps_per_epoch = params.steps_per_epoch or sampler.steps_per_epoch
    return TrainingRows(train_table, val_table, reader, sampler, steps_per_epoch,
                        params.epochs * steps_per_epoch)
