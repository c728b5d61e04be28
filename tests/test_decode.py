"""Streaming decoding: schedule enforced, and streamed tokens equal whole-sequence (teacher-forced) argmax."""

from __future__ import annotations

import pytest
import torch

from models.decode import _banned, stream_decode
from models.format import Schedule, ScheduleCursor, Slot, deinterleave
from models.tokenizer import control_ids, text_prompt


@pytest.mark.parametrize("fmt", ["tis", "think_first"])
def test_stream_equals_whole_sequence_argmax(tokenizer, tiny_model, fmt):
    ids = control_ids(tokenizer)
    s = Schedule(2, 3)
    prompt = text_prompt(tokenizer, "What is 2 plus 2?")
    events = list(stream_decode(tiny_model.thinker, prompt, ids, s, fmt=fmt, max_new_tokens=40))
    gen = [e.token for e in events]
    assert len(gen) == 40 or events[-1].eos
    # Whole sequence in one forward pass: every predicted token is the masked argmax there too.
    with torch.no_grad():
        logits = tiny_model.thinker(input_ids=torch.tensor([prompt + gen])).logits[0]
    cur = ScheduleCursor(s, ids)
    tf_stream = "control"
    for i, e in enumerate(events):
        slot = cur.next_slot() if fmt == "tis" else None
        if not e.forced and not (fmt == "tis" and slot is Slot.THINK and cur.reasoning_done):
            lg = logits[len(prompt) + i - 1].clone()
            lg[list(_banned(slot, ids, fmt, tf_stream))] = float("-inf")
            assert int(lg.argmax()) == e.token, f"position {i}"
        if fmt == "tis":
            cur.advance(e.token)
        elif e.token in (ids.think, ids.speak):
            tf_stream = "reasoning" if e.token == ids.think else "response"


def test_schedule_is_enforced_on_events(tokenizer, tiny_model):
    ids = control_ids(tokenizer)
    s = Schedule()
    events = list(stream_decode(tiny_model.thinker, text_prompt(tokenizer, "What is 5 times 3?"), ids, s,
                                max_new_tokens=60, temperature=1.0, generator=torch.Generator().manual_seed(0)))
    for e in events:
        pos = e.index % s.block_len
        if pos == 0:
            assert e.token == ids.speak and e.forced and e.stream == "control"
        elif pos == s.speak + 1:
            assert e.token == ids.think and e.forced
        elif pos <= s.speak:
            assert e.stream == "response" and e.token not in (ids.speak, ids.think)
        else:
            assert e.stream == "reasoning" and e.token not in (ids.speak, ids.think, ids.eos)
        assert e.block == e.index // s.block_len
    split = deinterleave([e.token for e in events], ids, s)  # always splits cleanly
    assert split.ended == events[-1].eos
