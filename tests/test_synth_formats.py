"""Solution formats and rejection reasons, on records these tests write themselves.

GSM8K "socratic" solutions (sub-question ** step), markdown-formatted solutions, answer-only
records through every loader, math a listener cannot follow, and the response rules.
"""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from conftest import synth_params

from tasks.synth.checks import REASONS, response_problem
from tasks.core.params import SourceSpec
from tasks.synth.pipeline import Rules, process_batch
from tasks.synth.readback import mismatch
from tasks.synth.solutions import NoSolution, decompose
from tasks.synth.sources import collect
from tasks.synth.verbalize import speakable
from test_synth_datasets import small_tokenizer

SOCRATIC = {
    "question": "A baker makes 24 muffins each morning. She sells 3/4 of them by noon and gives 2 to a "
                "neighbor. How many muffins are left?",
    "answer": "How many muffins does she sell by noon? ** She sells 24 * 3/4 = <<24*3/4=18>>18 muffins by noon.\n"
              "How many muffins are left after the neighbor? ** After the neighbor, 24 - 18 - 2 = <<24-18-2=4>>4 "
              "muffins are left.\n#### 4",
}
MARKDOWN = {
    "question": "A farm has 12 cows and buys 8 more. Each cow gives 3 liters of milk. How many liters in all?",
    "answer": "### Solution\n**Step 1:** Count the cows: 12 + 8 = 20 cows.\n\n**Step 2:** Multiply by the milk "
              "per cow:\n- 20 * 3 = 60 liters\n\nSo the farm gets **60 liters** of milk in all.",
}
ANSWER_ONLY = [  # (kind, record) with an answer and no worked steps, as MAWPS/MetaMath files have them
    ("gsm8k", {"question": "Tom has 3 bags of 168 marbles. How many marbles?", "answer": "#### 504"}),
    ("gsm8k", {"question": "Tom has 3 bags of 168 marbles. How many marbles?", "answer": "504"}),
    ("orca_math", {"question": "Tom has 3 bags of 168 marbles. How many marbles?", "answer": "#### 504"}),
    ("orca_math", {"question": "Tom has 3 bags of 168 marbles. How many marbles?", "answer": "The answer is 504."}),
    ("metamathqa", {"query": "Tom has 3 bags of 168 marbles. How many marbles?", "response": "The answer is: 504"}),
    ("svamp", {"ID": "a1", "Body": "Tom has 3 bags of 168 marbles.", "Question": "How many marbles?",
               "Answer": 504.0}),
    ("svamp", {"ID": "a2", "Body": "Tom has 3 bags of 168 marbles.", "Question": "How many marbles?",
               "Equation": "( 504.0 )", "Answer": 504.0}),
]


def run_records(tmp_path, sources: list[tuple[str, list[dict]]], **cfg_kw) -> pd.DataFrame:
    specs = []
    for i, (kind, recs) in enumerate(sources):
        f = tmp_path / f"{kind}{i}.jsonl"
        f.write_text("".join(json.dumps(r) + "\n" for r in recs))
        specs.append(SourceSpec(kind, str(f)))
    cfg = synth_params(sources=tuple(specs), **cfg_kw)
    records, _, skipped = collect(cfg)
    assert not any(skipped.values()), skipped
    return process_batch(pd.DataFrame(records), Rules(cfg, small_tokenizer(), with_audio=False))


def test_socratic_subquestions_stay_in_the_reasoning(tmp_path):
    s = decompose("gsm8k", "s1", SOCRATIC)
    assert "**" not in s.reasoning and "?" not in s.response and "**" not in s.response
    assert "How many muffins does she sell by noon?" in s.reasoning  # the trace keeps the steps and their questions
    assert "24 - 18 - 2 = 4" in s.reasoning
    assert s.response.endswith("The answer is 4.")
    out = run_records(tmp_path, [("gsm8k", [SOCRATIC])])
    row = out.iloc[0]
    assert row.reject == "", (row.reject, row.detail)
    assert "times times" not in row.spoken_response and "?" not in row.spoken_response


def test_markdown_markers_never_reach_speech(tmp_path):
    s = decompose("orca_math", "m1", MARKDOWN)
    assert s.answer == "60"
    for text in (s.response, s.reasoning):
        assert not re.search(r"\*\*|###|^- |Step \d", text), text
    out = run_records(tmp_path, [("orca_math", [MARKDOWN])])
    row = out.iloc[0]
    assert row.reject == "", (row.reject, row.detail)
    assert "times times" not in row.spoken_response and "number" not in row.spoken_response


@pytest.mark.parametrize("kind, rec", ANSWER_ONLY, ids=[f"{k}-{i}" for i, (k, _) in enumerate(ANSWER_ONLY)])
def test_answer_only_records_are_no_solution_through_every_loader(kind, rec):
    with pytest.raises(NoSolution) as e:
        decompose(kind, "a", {k: v for k, v in rec.items() if k != "ID"})
    assert e.value.reason == "no_solution" and e.value.answer == "504"
    assert "168" in e.value.question


def test_answer_only_counted_in_the_batch_not_kept(tmp_path):
    by_kind: dict[str, list[dict]] = {}
    for kind, rec in ANSWER_ONLY:
        by_kind.setdefault(kind, []).append(rec)
    out = run_records(tmp_path, list(by_kind.items()))
    assert list(out.reject) == ["no_solution"] * len(ANSWER_ONLY)
    assert not out.response.str.contains("umber number").any()


@pytest.mark.parametrize("question, reason", [
    ("What is (3 + 4 * 5? Tom has 3 apples and buys 4.", "unreadable_math"),
    ("Find \\int_0^1 x dx. Tom has 3 apples and buys 4.", "unreadable_math"),
    ("Find |x if x = 3. Tom has 3 apples and buys 4.", "unreadable_math"),
])
def test_unreadable_math_is_rejected_with_its_reason(tmp_path, question, reason):
    rec = {"question": question, "answer": "Tom has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"}
    out = run_records(tmp_path, [("gsm8k", [rec])])
    assert out.iloc[0].reject == reason and out.iloc[0].detail


NUMBER_CASES = [  # questions with the number forms the issue lists, each with a worked GSM8K solution
    ("A kurta costs Rs.360 and a scarf Rs.40. What do both cost?", "360 + 40 = <<360+40=400>>400", "400"),
    ("A house costs $400 000 and the fee is $20 000. What is the total?",
     "400,000 + 20,000 = <<400000+20000=420000>>420,000", "420000"),
    ("Prices rose 12 1/2% on 200 items and 1⁄2 of them sold. How many sold?", "200 / 2 = <<200/2=100>>100", "100"),
    ("Sam ate 1/3rd of 30 plums. How many did he eat?", "30 / 3 = <<30/3=10>>10", "10"),
    ("A shop is open 1:00 PM - 6:00 PM. How many hours is it open?", "6 - 1 = <<6-1=5>>5", "5"),
    ("The alarm rings at 16:00 and the bus comes 2 hours later. At what hour in 24-hour time?",
     "16 + 2 = <<16+2=18>>18", "18"),
    ("If x - y = 4 and y = 3, what is x?", "x = 4 + 3 = <<4+3=7>>7", "7"),
    ("If M-3 = 9, what is M?", "M = 9 + 3 = <<9+3=12>>12", "12"),
    ("What is √16 + 5?", "The root is 4, and 4 + 5 = <<4+5=9>>9", "9"),
    ("What is |2 - 9| + 1?", "2 - 9 = -7, its size is 7, 7 + 1 = <<7+1=8>>8", "8"),
    ("What is (3 + 4) * 5?", "3 + 4 = <<3+4=7>>7 and 7 * 5 = <<7*5=35>>35", "35"),
    ("If 3x = 12, what is x?", "x = 12 / 3 = <<12/3=4>>4", "4"),
    ("He paid $8 dollars for 2 pens. What did one pen cost in dollars?", "8 / 2 = <<8/2=4>>4", "4"),
    ("A sticker costs $0.50 cents. How many cents do 6 stickers cost?", "6 * 50 = <<6*50=300>>300", "300"),
    ("Ann has $x and spends $5, leaving $7. What is x?", "x = 7 + 5 = <<7+5=12>>12", "12"),
]


def test_every_number_class_is_kept_and_reads_back(tmp_path):
    recs = [{"question": q, "answer": f"{steps}\n#### {a}"} for q, steps, a in NUMBER_CASES]
    out = run_records(tmp_path, [("gsm8k", recs)])
    for (q, _, a), row in zip(NUMBER_CASES, out.itertuples()):
        assert row.reject == "", (q, row.reject, row.detail)
        assert mismatch(q, row.spoken_question) == "", (q, row.spoken_question)
        assert mismatch(row.response, row.spoken_response) == "", row.response
        assert row.response.endswith(f"The answer is {a}.")
    said = dict(zip((q for q, _, _ in NUMBER_CASES), out.spoken_question))
    assert "three hundred and sixty rupees" in said[NUMBER_CASES[0][0]]
    assert "one p m to six p m" in said[NUMBER_CASES[4][0]]
    assert "x minus y" in said[NUMBER_CASES[6][0]] and "M minus three" in said[NUMBER_CASES[7][0]]
    assert "eight dollars for" in said[NUMBER_CASES[12][0]] and "fifty cents." in said[NUMBER_CASES[13][0]]


def test_a_wrong_reading_is_its_own_rejection(tmp_path, monkeypatch):
    """Break the speaker on purpose: the reader rejects the sample as number_mismatch_question."""
    from tasks.synth import verbalize

    real = verbalize.speakable
    monkeypatch.setattr(verbalize, "speakable", lambda text: real(text.replace("Rs.", "Rs 0.")))
    out = run_records(tmp_path, [("gsm8k", [{"question": NUMBER_CASES[0][0], "answer": "360 + 40 = 400\n#### 400"}])])
    assert out.iloc[0].reject == "number_mismatch_question"
    assert "360" in out.iloc[0].detail


@pytest.mark.parametrize("response, reason", [
    ("How many are left? There are 4 left. The answer is 4.", "question_in_response"),
    ("** There are 4 left. The answer is 4.", "markup_in_response"),
    ("There are [4] left. The answer is 4.", "markup_in_response"),
    ("Number number number number 504. The answer is 504.", "markup_in_response"),  # "####" read aloud
    ("It is 4 dollars dollars. The answer is 4.", "markup_in_response"),  # "$4 dollars" read twice
    ("She makes 9 times times 2. The answer is 18.", "markup_in_response"),  # "**" read aloud
    ("He is older than than Sue, so 4. The answer is 4.", "repeated_words"),
    ("Workers 4 400 bees. The answer is 400.", "repeated_words"),  # "four, four hundred": a broken formula
    ("There are 4 left. The answer is 4.", None),
    ("She has 2 2-hour visits and 10 10-dollar bills. The answer is 4.", None),  # "two, two hour": two numbers
    ("He had had 3.6667 pies. The answer is 3.6667.", None),
    ("Since Ezra reads twice as many as Ahmed, Ahmed reads 5. The answer is 5.", None),
])
def test_response_rules(response, reason):
    got = response_problem(response, speakable(response))
    assert (got[0] if got else None) == reason, got
    if got:
        assert reason in REASONS


def test_gsm8k_markers_read_aloud_are_rejected_when_they_slip_through():
    """A filler reading caught on the spoken side even when the text has no markup character left."""
    got = response_problem("First 3, then 3 more. The answer is 6.", "First three times times three. The answer is six.")
    assert got and got[0] == "markup_in_response"


def test_synthesize_trace_param_writes_the_builtin_arithmetic_in_that_style():
    """``synthesize.trace: partials`` gives the built-in source the same problems as ``scratchpad`` with the
    result's digits so far after each column (the default), ``remaining`` also what is left of the operands;
    the processed rows keep them (a sample passes the drift rule and verification)."""
    from tasks.synth.builtin import generate_problems

    plain = synth_params(sources=(SourceSpec("builtin", "", "", 6),), trace="scratchpad")
    partial = synth_params(sources=(SourceSpec("builtin", "", "", 6),), trace="partials")
    assert synth_params(sources=(SourceSpec("builtin", "", "", 6),)).trace == "partials"  # params.yaml's default
    a, b = collect(plain)[0], collect(partial)[0]
    ra, rb = [json.loads(r["record"]) for r in a], [json.loads(r["record"]) for r in b]
    assert [r["question"] for r in ra] == [r["question"] for r in rb]
    assert all(" =" not in r["reasoning"] for r in ra)
    assert all(" =" in r["reasoning"] or "/" in r["reasoning"] for r in rb)
    assert [r["reasoning"] for r in rb] == [p.reasoning for p in generate_problems(6, seed=partial.seed, style="partials")]
    out = process_batch(pd.DataFrame(b), Rules(partial, small_tokenizer(), with_audio=False))
    assert (out.reject == "").all(), out[["reject", "detail"]]
    left = synth_params(sources=(SourceSpec("builtin", "", "", 6),), trace="remaining")
    rc = collect(left)[0]
    assert [json.loads(r["record"])["reasoning"] for r in rc] == [
        p.reasoning for p in generate_problems(6, seed=left.seed, style="remaining")]
    out = process_batch(pd.DataFrame(rc), Rules(left, small_tokenizer(), with_audio=False))
    assert (out.reject == "").all(), out[["reject", "detail"]]
    with pytest.raises(ValueError, match="synthesize.trace"):
        generate_problems(2, style="columns")


def test_align_facts_starts_every_column_fact_that_a_think_block_would_cut_at_a_block():
    """synthesize.align_facts (tasks/synth/blocks.py): spaces before each column fact that reasoning tokens
    k // think would split over two blocks (and that fits in one), so no such fact is cut; the trace is the
    same but for those spaces, its facts keep their values, and the synthesized rows store the aligned
    reasoning with ids and drift constraints computed from it."""
    from bench.bench_straddle import split_by_block
    from tasks.synth.blocks import align_facts, column_facts, is_cut, token_spans
    from tasks.synth.builtin import generate_problems

    tok = small_tokenizer()
    probs = generate_problems(40, seed=3, style="partials")
    cut_before = 0
    for think in (8, 5):
        for p in probs:
            aligned = align_facts(tok, p.reasoning, think)
            assert re.sub(r"\s", "", aligned) == re.sub(r"\s", "", p.reasoning) and len(aligned) >= len(p.reasoning)
            assert [ok for *_, ok in column_facts(aligned)] == [ok for *_, ok in column_facts(p.reasoning)]
            facts = column_facts(aligned)
            for (first, last) in token_spans(tok, aligned, [(a, b) for a, b, _ in facts]):
                assert not (is_cut(first, last, think) and last - first + 1 <= think), (think, aligned)
            assert align_facts(tok, aligned, think) == aligned  # nothing left to move
            cut_before += split_by_block(tok, p.reasoning, think)["cut"][1]
    assert cut_before > 40  # the unaligned traces do cut facts
    on = synth_params(sources=(SourceSpec("builtin", "", "", 6),), align_facts=True)
    off = synth_params(sources=(SourceSpec("builtin", "", "", 6),), align_facts=False)
    rows = collect(on)[0]
    a = process_batch(pd.DataFrame(rows), Rules(on, tok, with_audio=False))
    b = process_batch(pd.DataFrame(rows), Rules(off, tok, with_audio=False))
    assert (a.reject == "").all() and (b.reject == "").all(), a[["reject", "detail"]]
    assert list(a.reasoning) == [align_facts(tok, r, 8) for r in b.reasoning]  # schedule.think: 8
    assert list(a.reasoning_ids) != list(b.reasoning_ids)
    assert [list(x) for x in a.reasoning_ids] == [tok(r, add_special_tokens=False)["input_ids"] for r in a.reasoning]
