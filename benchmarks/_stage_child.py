"""One stage of the pipeline in a child process, measured from outside: what benchmarks/scale.py
and benchmarks/ray_engine.py run in their `--child` processes, and the peaks of the child's
memory (/proc/<pid>/status every 50 ms) that the parent reads while it runs.
"""

import json
import subprocess
import time
from pathlib import Path

import numpy as np

from benchmarks.run_pipeline import overridden_params

ROOT = Path(__file__).resolve().parents[1]


def measure(command: list[str]) -> dict:
    """Run a child; its last stdout line is JSON. Adds peak RssAnon / RssFile / VmRSS in MiB."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    status = Path(f"/proc/{child.pid}/status")
    while child.poll() is None:
        try:
            for line in status.read_text().splitlines():
                key, _, value = line.partition(":")
                if key in peak:
                    peak[key] = max(peak[key], int(value.split()[0]) // 1024)
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    out = child.stdout.read().strip().splitlines()
    if child.returncode != 0 or not out:
        raise SystemExit(f"{' '.join(command)} failed with exit code {child.returncode}")
    return {
        **json.loads(out[-1]),
        "peak_anon_mib": peak["RssAnon"],
        "peak_file_mib": peak["RssFile"],
        "peak_rss_mib": peak["VmRSS"],
    }


def child(stage: str, work: Path, overrides: dict, mode: str) -> dict:
    """One stage in this process; returns its figures."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    params = overridden_params(overrides)
    from pipeline import runner

    start = time.perf_counter()
    if stage == "train":
        if mode == "old":
            _use_the_old_input()
        timer = epoch_timer(params.train.batch_size)
        runner.train(params, prepared_dir=work / "prepared", model_dir=work / "model", callbacks=(timer,))
        return {"seconds": time.perf_counter() - start, "samples_per_s": timer.rate}
    _run_stage(stage, params, work)
    seconds = time.perf_counter() - start
    rows = sum(json.loads((work / "prepared" / "manifest.json").read_text())["counts"].values())
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def _run_stage(stage: str, params, work: Path) -> None:
    """The stage's recipe (its module's `run`, as stages/*.py call it) on the paths under work;
    only that stage's module is imported, so the memory figures are the stage's own."""
    import importlib

    prepared, model, latents, evaluation = (
        work / "prepared",
        work / "model/model.keras",
        work / "latents",
        work / "evaluation",
    )
    module = importlib.import_module(
        {
            "prepare": "pipeline.data.prepare",
            "encode": "pipeline.latents.encode",
            "baselines": "pipeline.evaluation.baselines",
            "umap": "pipeline.evaluation.umap_view",
            "evaluate": "pipeline.evaluation.evaluate",
            "report": "pipeline.evaluation.report",
        }[stage]
    )
    if stage == "prepare":
        module.from_params(params, out_dir=prepared)
    elif stage == "encode":
        module.from_params(params, prepared_dir=prepared, model_path=model, out_dir=latents)
    elif stage == "baselines":
        module.from_params(params, prepared_dir=prepared, out_dir=evaluation)
    elif stage == "evaluate":
        module.from_params(
            params, prepared_dir=prepared, model_path=model, latents_dir=latents, out_dir=evaluation
        )
    elif stage == "umap":
        module.from_params(params, prepared_dir=prepared, latents_dir=latents, out_dir=evaluation)
    else:
        module.write_report(evaluation)


def epoch_timer(batch_size: int):
    import keras

    class Timer(keras.callbacks.Callback):
        """Samples per second of the training steps alone: epoch start to the validation pass.
        rate: the last epoch's; rates: every epoch's."""

        def on_train_begin(self, logs=None):
            self.rates = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_test_begin(self, logs=None):
            self.rate = self.params["steps"] * batch_size / (time.perf_counter() - self.start)
            self.rates.append(self.rate)

    return Timer()


def _use_the_old_input() -> None:
    """The input before streaming: the rows scaled to float32 in memory, from_tensor_slices,
    a full shuffle."""
    import tensorflow as tf

    import pipeline.training.feed

    def batches(split, rows, batch_size, *, seed, shuffle=False, in_memory=False, binarize="none"):
        ds = tf.data.Dataset.from_tensor_slices(split.inputs(np.asarray(rows)))
        if shuffle:
            ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True).repeat()
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    pipeline.training.feed.batches = batches
