"""Messy public tables with only the data keys set: the latents' probes against PCA's.

    .venv/bin/python -m benchmarks.messy_tables --seeds 0 1 2

Two tables generated here with the traits of the R datasets a new user tried (issue "explore
and plug in"), written as the Rdatasets CSVs are, a `rownames` column first:

- crash: DAAG's nassCDS, 26,217 car-crash occupants; label `dead`; `caseid` ("year:psu:case",
  about 9,400 levels, shared by the occupants of one crash); empty cells in `yearVeh` and
  `injSeverity`; speed, belt, airbag, frontal impact, age and sex drive the outcome.
- stops: carData's MplsStops, 51,920 police stops; label `problem` (suspicious or traffic);
  a unique `idNum`, a timestamp `date`, empty cells in `citationIssued` and `gender`;
  time of day, searches, citations and place drive the label.

Each seed runs the whole pipeline in this process (prepare, train, encode, evaluate) and
prints the columns the rule left out or split, and the linear and kNN probes of the latents
and of a PCA of the same size, then the medians over seeds.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import command_line, write_results
from benchmarks.run_pipeline import overridden_params, probe_figures, whole_run

ROOT = Path(__file__).resolve().parents[1]


def crash(rng: np.random.Generator, n: int = 26_217):
    import pandas as pd

    speed = rng.choice(["1-9km/h", "10-24", "25-39", "40-54", "55+"], n, p=[0.05, 0.45, 0.3, 0.13, 0.07])
    level = np.searchsorted(["1-9km/h", "10-24", "25-39", "40-54", "55+"], speed)
    belted, airbag = rng.uniform(size=n) < 0.67, rng.uniform(size=n) < 0.55
    frontal, age = rng.uniform(size=n) < 0.64, np.clip(rng.gamma(4, 9, n), 16, 97).round()
    risk = 1.1 * level - 1.3 * belted - 0.4 * airbag * frontal + 0.03 * (age - 35) + rng.normal(0, 1, n)
    severity = np.clip(np.round(risk / 1.2 + 1.5), 0, 5)
    dead = np.where(risk + rng.normal(0, 0.7, n) > 3.7, "dead", "alive")
    crashes = np.cumsum(rng.uniform(size=n) < 0.36)  # about 2.8 occupants per crash, in row order
    frame = pd.DataFrame(
        {
            "rownames": np.arange(1, n + 1),
            "dvcat": speed,
            "weight": rng.gamma(1.2, 400, n).round(3),
            "dead": dead,
            "airbag": np.where(airbag, "airbag", "none"),
            "seatbelt": np.where(belted, "belted", "none"),
            "frontal": frontal.astype(int),
            "sex": rng.choice(["f", "m"], n),
            "ageOFocc": age.astype(int),
            "yearacc": rng.integers(1997, 2003, n),
            "yearVeh": rng.integers(1960, 2003, n).astype(float),
            "abcat": np.where(airbag, rng.choice(["deploy", "nodeploy"], n), "unavail"),
            "occRole": rng.choice(["driver", "pass"], n, p=[0.75, 0.25]),
            "deploy": (airbag & frontal).astype(int),
            "injSeverity": severity,
            "caseid": [f"{1997 + c % 6}:{c % 83}:{c}" for c in crashes],
        }
    )
    frame.loc[rng.uniform(size=n) < 0.01, "yearVeh"] = np.nan
    frame.loc[rng.uniform(size=n) < 0.006, "injSeverity"] = np.nan
    return frame, "dead"


def stops(rng: np.random.Generator, n: int = 51_920):
    import pandas as pd

    seconds = np.sort(rng.uniform(0, 365 * 86_400, n)).astype("timedelta64[s]")
    date = np.datetime64("2017-01-01T00:00:00") + seconds
    hour = (seconds.astype(np.int64) % 86_400) / 3600
    night = np.cos(2 * np.pi * hour / 24) > 0.2
    precinct = rng.integers(1, 6, n)
    person, vehicle = rng.uniform(size=n) < 0.3, rng.uniform(size=n) < 0.1
    logit = 1.5 * night + 1.6 * person + 0.8 * vehicle - 0.4 * (precinct == 3) + rng.normal(0, 1, n) - 1.2
    suspicious = logit > 0
    citation = np.where(suspicious, rng.uniform(size=n) < 0.05, rng.uniform(size=n) < 0.45)
    frame = pd.DataFrame(
        {
            "rownames": np.arange(1, n + 1),
            "idNum": [f"17-{i:06d}" for i in rng.permutation(n)],
            "date": pd.to_datetime(date).strftime("%Y-%m-%d %H:%M:%S"),
            "problem": np.where(suspicious, "suspicious", "traffic"),
            "MDC": rng.choice(["MDC", "other"], n, p=[0.8, 0.2]),
            "citationIssued": np.where(citation, "YES", "NO").astype(object),
            "personSearch": np.where(person, "YES", "NO"),
            "vehicleSearch": np.where(vehicle, "YES", "NO"),
            "preRace": rng.choice(
                ["White", "Black", "Unknown", "East African", "Latino", "Native American", "Asian", "Other"],
                n,
            ),
            "gender": rng.choice(["Male", "Female", "Unknown"], n, p=[0.7, 0.25, 0.05]),
            "lat": 44.95 + 0.01 * precinct + rng.normal(0, 0.01, n),
            "long": -93.27 + rng.normal(0, 0.02, n),
            "policePrecinct": precinct,
            "neighborhood": [f"hood{p * 17 + k}" for p, k in zip(precinct, rng.integers(0, 17, n))],
        }
    )
    frame.loc[rng.uniform(size=n) < 0.1, "citationIssued"] = None
    frame.loc[rng.uniform(size=n) < 0.05, "gender"] = None
    return frame, "problem"


def run(csv: Path, label: str, seed: int, out: Path) -> dict:
    params = overridden_params(
        {"data.source": "table", "data.path": str(csv), "data.table.label_column": label, "seed": seed}
    )
    start = time.perf_counter()
    metrics = whole_run(params, out)
    choices = json.loads((out / "prepared" / "manifest.json").read_text())["choices"]
    handled = {
        key.rsplit(".", 1)[-1]: item["value"]
        for key, item in choices.items()
        if key.startswith("data.table.column_types.") and (item["value"] == "left out" or ":" in key)
    }
    return {
        "table": csv.stem,
        "seed": seed,
        "handled": handled,
        **probe_figures(metrics),
        "seconds": round(time.perf_counter() - start),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vae-messy-"))
    tables = []
    for make in (crash, stops):
        frame, label = make(np.random.default_rng(0))
        frame.to_csv(work / f"{make.__name__}.csv", index=False)
        tables.append((work / f"{make.__name__}.csv", label))
    rows = []
    for seed in args.seeds:
        for csv, label in tables:  # interleaved: each seed runs both tables
            rows.append(run(csv, label, seed, work / f"{csv.stem}-{seed}"))
            print(json.dumps(rows[-1]), flush=True)
    summaries = []
    for csv, _ in tables:
        mine = [r for r in rows if r["table"] == csv.stem]
        medians = {
            key: round(statistics.median(r[key] for r in mine), 3)
            for key in ("linear", "knn", "pca_linear", "pca_knn", "seconds")
        }
        summaries.append(
            {
                "table": csv.stem,
                "median_of_seeds": args.seeds,
                **medians,
                "linear_minus_pca": round(medians["linear"] - medians["pca_linear"], 3),
            }
        )
        print(json.dumps(summaries[-1]))
    write_results("messy_tables", command_line(__spec__), {"runs": rows, "medians": summaries})


if __name__ == "__main__":
    main()
