"""Ops over the last axis at a rank every kernel takes.

On CPUs with AVX512_VNNI, AVX512_BF16 or AMX, TensorFlow runs oneDNN's kernels by default
(elsewhere `TF_ENABLE_ONEDNN_OPTS=1` turns them on), and oneDNN's Softmax takes tensors of
rank 1 to 5 only, in float32 and bfloat16 alike. The likelihoods meet higher ranks: a level
likelihood's logits are K samples × B × H × W × C × L levels (rank 6). Every op that
normalises over the last axis goes through `over_last_axis`, which folds the leading axes
into one (a reshape: no copy), applies the op to a matrix and unfolds the result.

Audited on TensorFlow 2.21 with oneDNN on and off, float32 and bfloat16, eagerly and in a
tf.function, values and gradients, at ranks 6 and 7 (tests/model/test_kernel_paths.py and
tests/pipeline/test_kernel_paths_dvc.py run the model harness and `dvc repro` on both paths): only
Softmax fails. LogSoftmax, logsumexp's reductions (max, sum over any axes), MatMul and
BatchMatMul, Transpose, Concat, AddN, broadcast arithmetic, gathers (take_along_axis),
relu / elu / gelu / sigmoid / softplus / log_sigmoid and batch normalisation take every
rank there. logsumexp goes through the helper too, so that every normalisation over the
levels has one code path.
"""

from keras import ops


def over_last_axis(fn, x):
    """fn applied to x folded to (N, k), the result unfolded: x (..., k) -> (..., *fn's trailing shape).

    fn maps (N, k) to (N, *T) (T empty for a reduction); the result has shape (..., *T).
    """
    shape = ops.shape(x)
    result = fn(ops.reshape(x, (-1, shape[-1])))
    return ops.reshape(result, (*shape[:-1], *ops.shape(result)[1:]))


def softmax(logits):
    """softmax over the last axis, at any rank: (..., k) -> (..., k)."""
    return over_last_axis(lambda flat: ops.softmax(flat, axis=-1), logits)


def logsumexp(x):
    """log Σ_j exp(x_j) over the last axis, at any rank: (..., k) -> (...,)."""
    return over_last_axis(lambda flat: ops.logsumexp(flat, axis=-1), x)
