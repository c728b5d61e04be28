"""The ``evaluate`` stage: Spoken-MQA benchmarks (benchmarks.py) and AudioBench's math scoring (metric.py)."""
