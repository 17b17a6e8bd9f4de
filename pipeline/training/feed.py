"""tf.data input from the prepared arrays: batches read by row and preprocessed on the way.

Rows come from the memory-mapped x.npy (or from one in-memory copy of the rows, see
`train.input`), in a seeded order that is a new permutation every pass. The permutation
is computed index by index (`tf.random.experimental.index_shuffle`), so no array of the
size of the data is built for it. Each batch is read in sorted row order (sequential
reads of the file) and goes through the split's `Preprocessor`, the one preprocessing of
the pipeline, so the stored uint8 pixels become float32 inputs one batch at a time.
"""

import numpy as np
import tensorflow as tf

from pipeline.data.prepared import Split, binarization_draw

# Positions are permuted this many at a time (vectorised index_shuffle).
SHUFFLE_BLOCK = 65_536
# Batches read ahead of the training step: enough to hide a read, and a fixed number, so
# that memory does not depend on how long tf.data's autotuner has been growing its buffer.
PREFETCH_BATCHES = 8


def batches(
    split: Split,
    rows: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    shuffle: bool = False,
    in_memory: bool = False,
    binarize: str = "none",
) -> tf.data.Dataset:
    """A tf.data.Dataset of float32 batches of the model's inputs for split rows `rows`.

    shuffle: endless passes, each a fresh permutation seeded by `seed`, batches running
    across passes (fit with steps_per_epoch); else one pass in row order.
    in_memory: copy the rows' stored values into memory first, instead of reading the file.
    binarize (data.binarize): "dynamic" draws x_b ~ Bernoulli(x) afresh for every batch when
    shuffled; otherwise (validation) each row gets the one fixed `data.binarization_draw` that
    every score uses, so validation scores the same data every epoch, as evaluate does.
    """
    rows = np.asarray(rows, np.int64)  # no copy of a memory-mapped int64 index
    load = _loader(split, rows, seed, in_memory, fixed_draw=binarize == "dynamic" and not shuffle)
    positions = _positions(len(rows), batch_size, seed if shuffle else None)
    ds = positions.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if binarize == "dynamic" and shuffle:
        ds = ds.map(
            lambda b: tf.cast(tf.random.uniform(tf.shape(b), seed=seed) < b, b.dtype),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.prefetch(PREFETCH_BATCHES)


def _loader(split: Split, rows: np.ndarray, seed: int, in_memory: bool, fixed_draw: bool):
    """A tf.data map from a batch of positions in `rows` to that batch's preprocessed inputs."""
    source = np.asarray(split.x[rows]) if in_memory else split.x
    lookup = None if in_memory else rows
    shape = [None, *split.preprocess.output_shape(split.x.shape[1:])]

    def read(positions: np.ndarray) -> np.ndarray:
        positions = np.sort(positions)
        x = split.preprocess(source[positions if lookup is None else lookup[positions]])
        return binarization_draw(x, rows[positions], seed) if fixed_draw else x

    def load(positions):
        x = tf.numpy_function(read, [positions], tf.float32, stateful=False)
        x.set_shape(shape)
        return x

    return load


def _positions(n: int, batch_size: int, seed: int | None) -> tf.data.Dataset:
    """Batches of positions 0..n-1: in order once (seed None), or endlessly, permuted per pass."""
    if seed is None:
        return tf.data.Dataset.range(n).batch(batch_size)

    def one_pass(p):
        key = tf.stack([tf.constant(seed, tf.int64), p])
        return (
            tf.data.Dataset.range(n)
            .batch(SHUFFLE_BLOCK)
            .map(lambda i: tf.random.experimental.index_shuffle(i, key, tf.constant(n - 1, tf.int64)))
            .unbatch()
        )

    return tf.data.Dataset.range(np.iinfo(np.int64).max).flat_map(one_pass).batch(batch_size)
