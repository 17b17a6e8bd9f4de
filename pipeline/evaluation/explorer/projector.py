"""The explorer's points as TensorBoard Embedding Projector files, for a tool users already have:

projector/tensors.tsv            z_mean, one row per point, tab-separated
projector/metadata.tsv           a header, then id, label, the probe's prediction, right/wrong
projector/sprite.png             images: every point's picture in a grid, row by row
projector/projector_config.pbtxt what `tensorboard --logdir data/evaluation/projector` reads
"""

import math
from pathlib import Path

import numpy as np

from pipeline.evaluation.explorer.page import Points

SPRITE_MAX_SIDE = 8192  # the projector's limit on the sprite image, in pixels


def write_projector(folder: Path, points: Points, pictures: np.ndarray | None) -> None:
    """tensors.tsv, metadata.tsv, sprite.png (images) and projector_config.pbtxt."""
    folder.mkdir()
    np.savetxt(folder / "tensors.tsv", points.z, delimiter="\t", fmt="%.6g")
    clean = lambda text: " ".join(str(text).split())  # noqa: E731 - no tab or newline inside a field
    rows = ["id\tlabel\tpredicted\tprobe"] + [
        f"{i}\t{clean(label)}\t{clean(p) or '-'}\t{'' if not p else 'right' if p == label else 'wrong'}"
        for i, label, p in zip(points.ids.tolist(), points.labels, points.predicted)
    ]
    (folder / "metadata.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    sprite = ""
    if pictures is not None and len(pictures):
        per_row = math.ceil(math.sqrt(len(pictures)))
        side = min(max(pictures.shape[1:3]), SPRITE_MAX_SIDE // per_row)
        _write_sprite(folder / "sprite.png", pictures, per_row, side)
        sprite = (
            f'  sprite {{\n    image_path: "sprite.png"\n    single_image_dim: {side}\n'
            f"    single_image_dim: {side}\n  }}\n"
        )
    (folder / "projector_config.pbtxt").write_text(
        'embeddings {\n  tensor_name: "z_mean"\n  tensor_path: "tensors.tsv"\n  metadata_path: '
        '"metadata.tsv"\n'
        f"{sprite}}}\n",
        encoding="utf-8",
    )


def _write_sprite(path: Path, pictures: np.ndarray, per_row: int, side: int) -> None:
    """The pictures as side × side tiles, per_row to a row, left to right, top to bottom."""
    from PIL import Image

    mode = "L" if pictures.shape[-1] == 1 else "RGB"
    sheet = Image.new(mode, (per_row * side, per_row * side))
    for i, picture in enumerate(pictures):
        tile = Image.fromarray(picture[..., 0] if mode == "L" else picture).resize(
            (side, side), Image.NEAREST
        )
        sheet.paste(tile, ((i % per_row) * side, (i // per_row) * side))
    sheet.save(path, optimize=True)
