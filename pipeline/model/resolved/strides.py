"""Each convolution's strides, from the sides of an example: stride 2 while a side halves
exactly, then 1. The encoder takes them in order and the decoder undoes them in reverse, so the
decoder's output has exactly the input's size (pipeline.model.networks; the FLOPs count reads
the same feature maps, pipeline.model.resolved.flops)."""


def conv_strides(size: int, layers_: int) -> list[int]:
    """Stride 2 while the spatial size halves exactly, then 1: 28 -> 14 -> 7, 8 -> 4 -> 2.

    The decoder mirrors the same strides, so its output has exactly the input's size.
    """
    strides = []
    for _ in range(layers_):
        stride = 2 if size % 2 == 0 and size >= 4 else 1
        strides.append(stride)
        size //= stride
    return strides


def spatial_strides(shape, architecture: str, layers_: int) -> list[tuple[int, ...]]:
    """Each conv layer's strides: per axis of an image (H, W), or along a series (L)."""
    sides = shape[:2] if architecture == "conv" else shape[:1]
    return list(zip(*(conv_strides(side, layers_) for side in sides)))
