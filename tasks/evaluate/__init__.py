"""Stage `evaluate`: Spoken-MQA accuracy, spoken words and latency of one format's trained model.

The benchmark (benchmarks/: one module per benchmark, named by ``evaluate.benchmark`` through the
registry: the real Spoken-MQA from a hub id or a local copy, the offline proxy, GSM8K, SVAMP, a local
file with named fields), decoding through the streaming session (decode.py), AudioBench's math scoring (metric.py),
the metrics (summary.py), plots (plots.py); the stage's work is workflow.py. ``compare``
(tasks/compare.py) then puts the two formats side by side.

    python -m tasks.evaluate --format tis            # or --format think_first; writes reports/evaluate/<fmt>/
"""

STAGE = "evaluate"
PARAMS = ["evaluate", "schedule"]  # exactly the params of this stage in dvc.yaml


def main(argv: list[str] | None = None) -> None:
    from tasks.core.stage import stage_main

    def work(p, fmt, tracker):
        from tasks.evaluate.workflow import work as evaluate

        return evaluate(p, fmt, tracker)

    stage_main(STAGE, PARAMS, work, argv, per_format=True, context="evaluation",
               description="Evaluate a format's trained model on Spoken-MQA (or its offline proxy): accuracy, "
                           "spoken words, latency; writes reports/evaluate/<format>/.")
