"""DVC stage report: the evaluation parts as one metrics.json and report.md, and a short summary."""

from pipeline.platform.console import as_command


def main() -> None:
    from pipeline.evaluation.report import summary, write_report

    metrics, _ = write_report("data/evaluation")
    print(summary(metrics))
    print("report: data/evaluation/report.md")


if __name__ == "__main__":
    as_command(main)
