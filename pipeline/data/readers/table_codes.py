"""A table's second pass: each row's codes into x and its label's index into y, part by part.

The columns are typed already (by the first pass, pipeline.data.readers.tables, or by a
trained model); a block's codes are made by pipeline.data.readers.table_cells. Here, block by
block; under `cluster.engine: ray`, a whole part in each task. A row with no value in any
feature column, or a level the columns do not know, is an error line.
"""

import functools
from pathlib import Path

import numpy as np

from pipeline.data.manifest import Column
from pipeline.data.readers.source_dataset import NO_LABEL, Dataset
from pipeline.data.readers.table_cells import checked_numbers, codes
from pipeline.platform.engine import LocalEngine
from pipeline.platform.errors import DataError
from pipeline.platform.io import allocate


def coded(path: Path, columns, label_column, labels, rows: int, parts, engine, scratch, choices) -> Dataset:
    """The second pass: x (rows, columns) of codes and y of label indices, block by block here,
    part by part in tasks under Ray."""
    x = allocate(scratch, "table_x", (rows, len(columns)), np.float32)
    y = allocate(scratch, "labels", (rows,), np.int32)
    if isinstance(engine, LocalEngine):
        blocks = (block for part in parts for block in _code_blocks(columns, label_column, labels, part))
    else:
        blocks = engine.map(functools.partial(_code_part, columns, label_column, labels), parts)
    for start, x_block, y_block in blocks:
        x[start : start + len(x_block)], y[start : start + len(y_block)] = x_block, y_block
    return Dataset(
        x=x,
        y=y,
        label_names=tuple(str(v) for v in labels or ()),
        source="table",
        path=str(path),
        feature_names=tuple(c.name for c in columns),
        columns=columns,
        choices=choices,
    )


def _code_part(columns, label_column, labels, part) -> tuple[int, np.ndarray, np.ndarray]:
    """(start, codes, label indices) of a whole part (a Ray task's result)."""
    blocks = list(_code_blocks(columns, label_column, labels, part))
    if not blocks:
        return part.start, np.empty((0, len(columns)), np.float32), np.empty(0, np.int32)
    return part.start, np.concatenate([b[1] for b in blocks]), np.concatenate([b[2] for b in blocks])


def _code_blocks(columns: tuple[Column, ...], label_column, labels, part):
    """(start, (rows, columns) float32 codes, int32 label indices) of each batch of a part;
    DataError on a row with nothing observed or a level the columns do not know."""
    import pyarrow as pa
    import pyarrow.compute as pc

    start, sources = part.start, sorted({c.read_from for c in columns} | ({label_column} - {None}))
    for batch in part.batches(sources):
        block = np.empty((batch.num_rows, len(columns)), np.float32)
        for c, column in enumerate(columns):
            cells_of_batch = batch.column(column.read_from)
            if column.levels is None and column.part is None:  # the column's numbers, checked
                values, unseen = checked_numbers(part.path, column, cells_of_batch, start), None
            else:
                values, unseen = codes(column, cells_of_batch)
            if unseen is not None:
                raise DataError(
                    f"{part.path}: column {column.name!r} holds {unseen!r}, a value its {column.type} "
                    f"levels {column.levels[:20]} do not include (a level never seen in training)"
                )
            block[:, c] = values
        empty = np.flatnonzero(np.isnan(block).all(axis=1))
        if len(empty):
            raise DataError(
                f"{part.path}: row {start + int(empty[0])} has no value in any feature column "
                f"({len(empty)} such rows in this block); remove those rows"
            )
        y = np.full(batch.num_rows, NO_LABEL, np.int32)
        if label_column:
            index = pc.index_in(batch.column(label_column), value_set=pa.array(labels))
            y[:] = index.to_numpy(zero_copy_only=False)
        yield start, block, y
        start += batch.num_rows
