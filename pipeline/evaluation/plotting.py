"""Plotting primitives: labelled scatter plots, bar charts, histograms and grids of images,
written atomically, and the CSV tables DVC's plots read."""

import csv
import io
from pathlib import Path

import numpy as np

from pipeline.platform.io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."))
    _pyplot().close(fig)


def plot_scatter(coords: np.ndarray, labels: np.ndarray, label_names, title: str, path: Path) -> None:
    """2-D points coloured by label (one colour when there are no labels), with a legend.

    Args:
        coords: (n, 2) points.
        labels: (n,) class indices, or None.
        label_names: the classes' names.
        title: the figure's title.
        path: the PNG to write (atomically).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    cmap = plt.get_cmap("tab10" if len(label_names) <= 10 else "tab20")
    for i, name in enumerate(label_names):
        mask = labels == i
        ax.scatter(coords[mask, 0], coords[mask, 1], s=4, color=cmap(i % cmap.N), label=name)
    if not label_names:
        ax.scatter(coords[:, 0], coords[:, 1], s=4, color=cmap(0))
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if label_names:
        ax.legend(markerscale=3, fontsize=8, loc="best", title="label")
    fig.tight_layout()
    _save(fig, path)


def bar_chart(values: np.ndarray, xlabel: str, ylabel: str, title: str, path: Path) -> None:
    """One bar per entry of values, labelled by index.

    Args:
        values: one height per bar.
        xlabel, ylabel, title: the figure's texts.
        path: the PNG to write (atomically).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(values) + 1.5), 3.2), dpi=110)
    ax.bar(np.arange(len(values)), values, color="tab:blue")
    ax.set_xticks(np.arange(len(values)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def histograms(
    values: dict[str, np.ndarray],
    xlabel: str,
    ylabel: str,
    title: str,
    path: Path,
    marks: dict[str, float] | None = None,
) -> None:
    """One step histogram per entry of values ({name: samples}), on shared bins, each
    normalised to its own number of samples so that splits of any size compare; marks
    ({label: x}) as dashed vertical lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    present = {name: v for name, v in values.items() if len(v)}
    edges = np.histogram_bin_edges(np.concatenate(list(present.values())), bins=60) if present else 60
    for name, v in present.items():
        ax.hist(v, bins=edges, histtype="step", density=True, label=f"{name} ({len(v):,})")
    for (label, x), colour in zip((marks or {}).items(), ("0.35", "0.6")):
        ax.axvline(x, color=colour, linestyle="--", linewidth=1, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{ylabel} (density)")
    ax.set_title(title, fontsize=9)
    if present:
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def image_grid(rows: list[np.ndarray], row_titles: list[str], title: str, path: Path) -> None:
    """Rows of images, each (n, H, W, C) with C in {1, 3}; values shown on [0, 1]."""
    plt = _pyplot()
    n = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 0.95 + 0.4), dpi=110, squeeze=False)
    for r, (images, row_title) in enumerate(zip(rows, row_titles)):
        for c in range(n):
            ax = axes[r, c]
            ax.set_axis_off()
            if c < len(images):
                image = np.clip(images[c], 0, 1)
                ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(row_title, fontsize=7, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def csv_text(header: list[str], rows) -> str:
    """A CSV table, fields quoted where they must be (a label name with a comma or a quote)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()
