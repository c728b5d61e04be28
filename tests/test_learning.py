"""The stack learns what the data makes learnable (the learnability ladder, bench/bench_ladder.py).

Each test trains the tiny Qwen2.5-Omni from params.yaml through the project's own tokenizer, sequence
format, trainer (DeepSpeed engine, the stage's freeze table) and streaming session, and scores held-out
problems with the AudioBench rule. Numbers measured on 2 CPU cores (bench/results/ladder-*.json):
2-digit addition, think-first, 400 steps x 32: 100 % held-out; 2-digit x 1-digit, 500 steps x 32:
scratchpad 61 % against the one-line trace's 13 %.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


def _ladder(tmp_path, *args: str) -> list[dict]:
    from bench.bench_ladder import main

    return main([*args, "--out", str(tmp_path / "ladder.json")])["results"]


def test_two_digit_addition_is_learned_through_the_stack(tmp_path):
    (r,) = _ladder(tmp_path, "--task", "add", "--rungs", "b", "--steps", "400", "--batch", "32", "--test", "60")
    assert r["format"] == "think_first" and r["stages"] == ["text_tis"]
    assert r["accuracy"] >= 0.9, f"2-digit addition: {100 * r['accuracy']:.0f} % held-out; answers: {r['examples']}"


def test_scratchpad_beats_one_line_trace_on_multiplication(tmp_path):
    one_line, scratch = _ladder(tmp_path, "--task", "mul", "--rungs", "b", "--trace", "one_line,scratchpad",
                                "--steps", "500", "--batch", "32", "--test", "60")
    assert (one_line["trace"], scratch["trace"]) == ("one_line", "scratchpad")
    assert scratch["accuracy"] >= one_line["accuracy"] + 0.15, (
        f"2-digit x 1-digit at the same budget: scratchpad {100 * scratch['accuracy']:.0f} % vs one-line "
        f"{100 * one_line['accuracy']:.0f} %")
