"""`vae-pipeline`, the user's command: the only module of the library that parses arguments.

    vae-pipeline encode --model data/model/model.keras --input new.csv --output out/
    vae-pipeline plots-template NODE_MODULES OUT.html

`python -m pipeline.cli ...` is the same command without the installed script.
"""

import argparse
import sys
from pathlib import Path

from pipeline.platform.console import as_command
from pipeline.platform.params.config import EncodeConfig


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1. Got {text!r} instead.")
    return int(text)


def parser(width: int | None = None) -> argparse.ArgumentParser:
    """The command's parser; `width` fixes the help's line width (the generated reference's)."""

    def formatter(prog):
        return argparse.HelpFormatter(prog, width=width) if width else argparse.HelpFormatter(prog)

    root = argparse.ArgumentParser(
        prog="vae-pipeline", description="Use a trained VAE pipeline's outputs.", formatter_class=formatter
    )
    commands = root.add_subparsers(dest="command", required=True)
    _add_encode(commands, formatter)
    _add_plots_template(commands, formatter)
    return root


def _add_encode(commands, formatter) -> None:
    """`vae-pipeline encode`: what to encode and where, how to read the input, what else to write."""
    encode = commands.add_parser(
        "encode",
        formatter_class=formatter,
        help="encode new data with a trained model into latent Parquet",
        description="Encode new data with a trained model, preprocessed as its training "
        "data was; writes only the partition <output>/split=<split>.",
    )
    _add_encode_data(encode)
    _add_reader_options(encode)
    _add_reference_and_copy(encode)


def _add_encode_data(encode: argparse.ArgumentParser) -> None:
    """The model, the new data, the partition it goes to and how it is encoded."""
    encode.add_argument("--model", type=Path, required=True, help="a trained model.keras")
    encode.add_argument(
        "--input",
        type=Path,
        required=True,
        help="an .npz, a .csv/.parquet table, a directory of IDX files or of class folders",
    )
    encode.add_argument("--output", type=Path, required=True, help="directory of the latent Parquet dataset")
    encode.add_argument("--split", default="new", help="partition name for these rows (default: new)")
    encode.add_argument("--overwrite", action="store_true", help="replace an existing partition of that name")
    encode.add_argument(
        "--impute",
        action="store_true",
        help="a table model: also write each row completed, its empty cells imputed by the model",
    )
    encode.add_argument(
        "--batch-size",
        type=_positive_int,
        default=EncodeConfig.batch_size,  # encode.batch_size's
        help="rows per call of the encoder (memory, not results)",
    )


def _add_reader_options(encode: argparse.ArgumentParser) -> None:
    """How to read the input, by its kind (encode_new_data's reader_options)."""
    encode.add_argument("--x-key", default="x", help="npz: array of inputs")
    encode.add_argument("--y-key", default=None, help="npz: array of labels (optional)")
    encode.add_argument(
        "--label-column",
        default=None,
        help="table: label column; .h5ad: the obs column of the labels (optional)",
    )
    encode.add_argument("--layer", default=None, help=".h5ad: the layer to encode (default: X)")


def _add_reference_and_copy(encode: argparse.ArgumentParser) -> None:
    """What the rows are scored against, and the .h5ad copy written beside the partition."""
    encode.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="the encode stage's latents of this model, whose training rows' surprisal each row's "
        "surprisal_quantile is of (default: data/latents beside the model's folder)",
    )
    encode.add_argument(
        "--anndata-out",
        type=Path,
        default=None,
        help='.h5ad input: also write a copy of it with the latents (z_mean) in obsm["X_vae"]',
    )


def _add_plots_template(commands, formatter) -> None:
    """`vae-pipeline plots-template`: the offline page for `dvc plots show`."""
    plots = commands.add_parser(
        "plots-template",
        formatter_class=formatter,
        help="an offline page for `dvc plots show --html-template`",
    )
    plots.add_argument("node_modules", type=Path, help="where npm installed vega, vega-lite and vega-embed")
    plots.add_argument("out", type=Path, help="the HTML template to write")


def _encode(args) -> None:
    import pyarrow.parquet as pq

    from pipeline.latents.encode_command import encode_new_data
    from pipeline.latents.scores import against_training

    rows = encode_new_data(
        args.model,
        args.input,
        args.output,
        batch_size=args.batch_size,
        split=args.split,
        overwrite=args.overwrite,
        impute=args.impute,
        x_key=args.x_key,
        y_key=args.y_key,
        label_column=args.label_column,
        layer=args.layer,
        anndata_out=args.anndata_out,
        reference=args.reference,
    )
    print(
        f"encoded {rows} rows of {args.input} into {args.output / f'split={args.split}'}"
        + (f" and {args.anndata_out} (obsm['X_vae'])" if args.anndata_out else "")
    )
    scores = pq.read_table(args.output / f"split={args.split}", columns=["surprisal_quantile", "novelty"])
    if (
        scores.column("novelty").null_count == 0
    ):  # with a reference: how the new rows stand against training's
        print(
            against_training(
                scores.column("surprisal_quantile").to_numpy(), scores.column("novelty").to_numpy()
            )
        )


def _plots_template(args) -> None:
    from pipeline.evaluation.plots_page import write_offline_template

    write_offline_template(args.node_modules, args.out)
    print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    as_command(lambda: {"encode": _encode, "plots-template": _plots_template}[args.command](args))


if __name__ == "__main__":
    main()
