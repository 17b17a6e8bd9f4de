"""The publish protocol (pipeline.platform.io): a stage's outputs change all together or not at all,
whatever instant a SIGKILL hits. The stages' own kill matrix is in test_kill.py."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.platform.faults import KILL_AT, fault_point
from pipeline.platform.io import recover, staged_outputs
from tests.builders import tree_bytes
from tests.conftest import ROOT

OLD = {
    "metrics.json": b'{"run": "old"}',
    "pictures/a.png": b"old a",
    "pictures/b.png": b"old b",
    "keep.txt": b"not an output of this stage",
}
NEW = {
    "metrics.json": b'{"run": "new"}',
    "pictures/a.png": b"new a",
    "confusion.csv": b"new csv",
    "keep.txt": b"not an output of this stage",
}

# A publication of three entries: a file replaced, a directory replaced whole, a file with no previous
# version.
PUBLISH = """
import sys
from pathlib import Path
from pipeline.platform.io import staged_outputs
with staged_outputs(sys.argv[1], "evaluate") as new:
    (new / "metrics.json").write_bytes(b'{"run": "new"}')
    (new / "pictures").mkdir()
    (new / "pictures" / "a.png").write_bytes(b"new a")
    (new / "confusion.csv").write_bytes(b"new csv")
"""


def write_old(out: Path) -> None:
    for name, data in OLD.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)


def killed_publish(tmp_path: Path, point: str, old: bool = True) -> tuple[Path, subprocess.CompletedProcess]:
    """tmp_path/evaluation (with the previous outputs when `old`), and the PUBLISH run killed there at
    `point`."""
    out = tmp_path / "evaluation"
    out.mkdir()
    if old:
        write_old(out)
    return out, subprocess.run(
        [sys.executable, "-c", PUBLISH, str(out)], cwd=ROOT, env={**os.environ, KILL_AT: point}
    )


def test_outputs_are_published_only_on_success(tmp_path):
    out = tmp_path / "evaluation"
    out.mkdir()
    write_old(out)
    with pytest.raises(RuntimeError), staged_outputs(out, "evaluate") as staging:
        (staging / "metrics.json").write_text('{"new": 1}')
        raise RuntimeError("the stage fails halfway")
    assert tree_bytes(out) == OLD and sorted(p.name for p in out.iterdir()) == [
        "keep.txt",
        "metrics.json",
        "pictures",
    ]
    subprocess.run([sys.executable, "-c", PUBLISH, str(out)], cwd=ROOT, check=True)
    assert tree_bytes(out) == NEW  # pictures/ replaced whole: b.png is gone; keep.txt kept
    assert sorted(p.name for p in out.iterdir()) == ["confusion.csv", "keep.txt", "metrics.json", "pictures"]


@pytest.mark.parametrize(
    "point, after",
    [("staged", OLD), ("journaled", NEW), ("aside", NEW), ("renamed", NEW), ("published", NEW)],
)
def test_a_kill_at_every_step_leaves_old_or_new_once_recovered(tmp_path, point, after):
    out, killed = killed_publish(tmp_path, point)
    assert killed.returncode == -signal.SIGKILL
    journal = (out / ".evaluate.journal").exists()
    assert journal == (point != "staged")  # past the commit point exactly when the journal is there
    if not journal:
        assert {k: v for k, v in tree_bytes(out).items() if not k.startswith(".")} == OLD  # untouched
    recover(out, "evaluate")  # what the next run of the stage does first
    assert tree_bytes(out) == after
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no litter
    recover(out, "evaluate")  # idempotent
    assert tree_bytes(out) == after
    # and the next run publishes
    subprocess.run([sys.executable, "-c", PUBLISH, str(out)], cwd=ROOT, check=True)
    assert tree_bytes(out) == NEW


def test_a_recovery_killed_midway_is_finished_by_the_next_one(tmp_path):
    """Roll-forward is a replay: kill it again halfway and a third process still finishes it."""
    out, _ = killed_publish(tmp_path, "journaled")
    script = f"from pipeline.platform.io import recover; recover({str(out)!r}, 'evaluate')"
    again = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, KILL_AT: "aside"})
    assert again.returncode == -signal.SIGKILL and not (out / "metrics.json").exists()  # aside, mid-entry
    recover(out, "evaluate")
    assert tree_bytes(out) == NEW


def test_a_run_killed_after_clearing_its_staging_but_not_its_journal_is_finished(tmp_path):
    out, _ = killed_publish(tmp_path, "published")
    shutil.rmtree(out / ".evaluate.staging")  # the kill came between the clean-up's two steps
    recover(out, "evaluate")
    assert tree_bytes(out) == NEW and not (out / ".evaluate.journal").exists()


def test_two_stages_sharing_a_directory_do_not_touch_each_others_publication(tmp_path):
    out, _ = killed_publish(tmp_path, "journaled", old=False)
    with staged_outputs(out, "umap") as new:  # recovers only its own publication
        (new / "umap.json").write_text("{}")
    assert (out / ".evaluate.journal").exists() and not (out / "metrics.json").exists()
    recover(out, "evaluate")
    assert sorted(tree_bytes(out)) == ["confusion.csv", "metrics.json", "pictures/a.png", "umap.json"]


def test_fault_points_follow_the_environment_as_it_is_now(monkeypatch):
    """A process that once met a fault point while one was set must not keep it: a test worker
    that drove a Ray test with VAE_PIPELINE_KILL_AT=parquet later SIGKILLed itself at its own
    next Parquet write (the setting had been read once and cached)."""
    monkeypatch.setenv(KILL_AT, "parquet")
    fault_point("staged")  # read while set
    monkeypatch.delenv(KILL_AT)
    fault_point("parquet")  # with the setting kept, this process would die here


def test_a_file_written_in_place_follows_the_umask_like_any_other(tmp_path):
    """atomic_path's temporary file is made 0600; the output must not keep that (a teammate
    on a shared server reads the metrics)."""
    from pipeline.platform.io import write_json

    for umask, mode in ((0o022, 0o644), (0o027, 0o640), (0o002, 0o664)):
        old = os.umask(umask)
        try:
            write_json(tmp_path / "metrics.json", {"S": 1.0})
            (tmp_path / "plain.txt").unlink(missing_ok=True)
            (tmp_path / "plain.txt").write_text("made by open()")
        finally:
            os.umask(old)
        assert oct((tmp_path / "metrics.json").stat().st_mode & 0o777) == oct(mode)
        assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == (
            tmp_path / "plain.txt"
        ).stat().st_mode & 0o777


def _text_calls_without_encoding(tree) -> list[int]:
    """Lines of read_text/write_text/open calls in text mode that leave the encoding to the locale."""
    import ast

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or any(k.arg == "encoding" for k in node.keywords):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        mode = next((a.value for a in node.args[1:2] if isinstance(a, ast.Constant)), "r")
        mode = next(
            (k.value.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)),
            mode,
        )
        builtin_open = name == "open" and isinstance(node.func, ast.Name)
        if name in ("read_text", "write_text") or (builtin_open and "b" not in str(mode)):
            found.append(node.lineno)
    return found


def test_every_text_file_the_pipeline_reads_or_writes_is_utf8():
    """A label "café" must not depend on the machine's locale (LANG=C would make it ASCII)."""
    import ast

    unspecified = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / "pipeline").rglob("*.py"))
        if (lines := _text_calls_without_encoding(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert not unspecified, unspecified
    assert _text_calls_without_encoding(
        ast.parse("open(p)\np.read_text()\nopen(p, 'rb')\nopen(p, encoding='utf-8')")
    ) == [1, 2]  # the check itself finds what it should
