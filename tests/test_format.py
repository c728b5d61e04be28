"""Properties of the TiS sequence format and the think-first baseline (hypothesis), and their cursors.

    .venv/bin/python -m pytest tests/test_format.py -q
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.format import (
    ControlIds,
    FormatError,
    Role,
    Schedule,
    Slot,
    ThinkFirstCursor,
    TisCursor,
    build,
    cursor_for,
    deinterleave,
    earliest_eos_block,
    interleave,
    think_first,
)

IDS = ControlIds(speak=1, think=2, pad=3, eos=4)
tokens = st.lists(st.integers(min_value=10, max_value=500), max_size=60)
nonempty = st.lists(st.integers(min_value=10, max_value=500), min_size=1, max_size=60)
schedules = st.builds(Schedule, speak=st.integers(1, 5), think=st.integers(1, 12))


def fits(resp: list[int], reas: list[int], s: Schedule) -> bool:
    eos_block = len(resp) // s.speak  # eos is speak-stream item number len(resp)
    return eos_block >= earliest_eos_block(len(reas), s)


@settings(max_examples=300, deadline=None)
@given(prompt=tokens, resp=nonempty, reas=tokens, s=schedules)
def test_round_trip_and_block_structure(prompt, resp, reas, s):
    if not fits(resp, reas, s):
        with pytest.raises(FormatError, match="response ends before reasoning"):
            interleave(prompt, resp, reas, IDS, s)
        return
    lay = interleave(prompt, resp, reas, IDS, s)
    assert lay.input_ids[: len(prompt)] == prompt
    body = lay.input_ids[len(prompt):]
    # Block structure: <speak> r*speak <think> t*think, repeated; ends right after eos.
    for b in range(0, len(body), s.block_len):
        block = body[b: b + s.block_len]
        assert block[0] == IDS.speak
        if len(block) > s.speak + 1:
            assert block[s.speak + 1] == IDS.think
    assert body[-1] == IDS.eos and body.count(IDS.eos) == 1
    assert (len(body) - 1) % s.block_len <= s.speak  # eos sits in a speak slot
    # Pads only after reasoning is done, never before a reasoning token.
    think_stream = [t for t, r in zip(lay.input_ids, lay.roles) if r is Role.REASONING]
    assert think_stream[: len(reas)] == reas and set(think_stream[len(reas):]) <= {IDS.pad}
    # Inverse.
    split = deinterleave(body, IDS, s)
    assert split.response == resp and split.reasoning == reas and split.ended
    assert lay.n_blocks == -(-len(body) // s.block_len)


@settings(max_examples=200, deadline=None)
@given(prompt=tokens, resp=nonempty, reas=tokens, s=schedules)
def test_loss_mask_excludes_prompt_and_controls_keeps_pads(prompt, resp, reas, s):
    lay = interleave(prompt, resp, reas, IDS, s, delay_eos=True)
    for tok, m, role in zip(lay.input_ids, lay.loss_mask, lay.roles):
        if role in (Role.PROMPT, Role.CONTROL):
            assert not m
        else:
            assert m
        if role is Role.CONTROL:
            assert tok in (IDS.speak, IDS.think)
    pads = [m for t, m, r in zip(lay.input_ids, lay.loss_mask, lay.roles) if t == IDS.pad and r is not Role.PROMPT]
    assert all(pads)
    assert deinterleave(lay.input_ids[len(prompt):], IDS, s).response == resp


@settings(max_examples=200, deadline=None)
@given(resp=nonempty, reas=tokens, s=schedules, data=st.data())
def test_min_block_delays_tokens_never_early(resp, reas, s, data):
    mb = sorted(data.draw(st.lists(st.integers(0, 6), min_size=len(resp), max_size=len(resp))))
    lay = interleave([], resp, reas, IDS, s, min_block=mb, delay_eos=True)
    i = 0
    for pos, (tok, role) in enumerate(zip(lay.input_ids, lay.roles)):
        if role is Role.RESPONSE and tok not in (IDS.pad, IDS.eos):
            assert pos // s.block_len >= mb[i]
            i += 1
    assert i == len(resp)
    split = deinterleave(lay.input_ids, IDS, s)
    assert (split.response, split.reasoning) == (resp, reas)


@settings(max_examples=150, deadline=None)
@given(prompt=tokens, resp=nonempty, reas=tokens)
def test_think_first_round_trip(prompt, resp, reas):
    lay = think_first(prompt, resp, reas, IDS)
    body = lay.input_ids[len(prompt):]
    assert body[0] == IDS.think and body[len(reas) + 1] == IDS.speak and body[-1] == IDS.eos
    split = deinterleave(body, IDS, fmt="think_first")
    assert (split.response, split.reasoning, split.ended) == (resp, reas, True)
    # Targets: reasoning, the <|speak|> that ends it, response, eos; not the forced <|think|>.
    assert sum(lay.loss_mask) == len(reas) + 1 + len(resp) + 1


def test_default_schedule_example():
    lay = interleave([100], [11, 12, 13], [21, 22, 23, 24, 25], IDS)
    assert lay.input_ids == [100, 1, 11, 12, 2, 21, 22, 23, 24, 25, 3, 3, 3, 1, 13, 4]
    assert lay.loss_mask == [False, False, True, True, False] + [True] * 8 + [False, True, True]


@pytest.mark.parametrize("bad", [
    dict(resp=[], reas=[20], match="empty response"),
    dict(resp=[11], reas=[4], match="reasoning contains control"),
    dict(resp=[1], reas=[], match="response contains control"),
    dict(resp=[11], reas=[20] * 9, match="response ends before reasoning"),
])
def test_invalid_inputs_raise_clear_errors(bad):
    with pytest.raises(FormatError, match=bad["match"]):
        interleave([], bad["resp"], bad["reas"], IDS)


def test_invalid_schedule_and_ids():
    with pytest.raises(FormatError, match="speak >= 1"):
        Schedule(speak=0, think=8)
    with pytest.raises(FormatError, match="distinct"):
        ControlIds(1, 1, 3, 4)


def test_cursor_forces_controls_and_rejects_wrong_token():
    c = TisCursor(Schedule(2, 2), IDS)
    assert c.next_slot() is Slot.SPEAK_CONTROL and c.forced_token() == IDS.speak
    with pytest.raises(FormatError, match="control"):
        c.advance(50)
    c.advance(IDS.speak)
    c.advance(50)
    c.advance(51)
    assert c.forced_token() == IDS.think
    c.advance(IDS.think)
    c.advance(IDS.pad)
    with pytest.raises(FormatError, match="contiguous"):
        c.advance(60)


def test_deinterleave_truncated_generation():
    lay = interleave([], [11, 12, 13, 14, 15], [21, 22], IDS)
    split = deinterleave(lay.input_ids[:8], IDS)
    assert not split.ended and split.response == [11, 12] and split.reasoning == [21, 22]


def labels(lay):
    """What the trainer trains on: the token where the loss mask is on, IGNORE elsewhere."""
    return [t if m else -100 for t, m in zip(lay.input_ids, lay.loss_mask)]


def test_think_first_speak_control_is_a_target():
    """The bug: think-first never stopped thinking because its <|speak|> was never a target."""
    prompt, resp, reas = [100, 101], [11, 12], [21, 22, 23]
    lab = labels(think_first(prompt, resp, reas, IDS))
    think_at, speak_at = len(prompt), len(prompt) + 1 + len(reas)
    assert lab[speak_at] == IDS.speak  # the one control the model must predict
    assert lab[think_at] == -100  # forced at decoding: out of the loss
    assert lab == [-100, -100, -100, 21, 22, 23, IDS.speak, 11, 12, IDS.eos]


def test_tis_labels_ignore_prompt_and_controls_keep_streams():
    lay = interleave([100, 101], [11, 12, 13], [21, 22, 23], IDS, Schedule(2, 4))
    assert lay.input_ids == [100, 101, 1, 11, 12, 2, 21, 22, 23, 3, 1, 13, 4]
    assert labels(lay) == [-100, -100, -100, 11, 12, -100, 21, 22, 23, 3, -100, 13, 4]


@pytest.mark.parametrize("fmt", ["tis", "think_first"])
def test_build_and_deinterleave_walk_the_same_cursor(fmt):
    """Every laid-out position is what the format's cursor says: forced tokens where it forces,
    never a banned id, roles and loss targets as it places them."""
    s = Schedule(2, 3)
    lay = build(fmt, [100], [11, 12, 13, 14], [21, 22, 23, 24, 25], IDS, s, delay_eos=True)
    cur = cursor_for(fmt, s, IDS)
    for tok, role, target in zip(lay.input_ids[1:], lay.roles[1:], lay.loss_mask[1:]):
        forced = cur.forced_token()
        assert tok == forced if forced is not None else tok not in cur.banned()
        placed = cur.advance(tok)
        assert (placed.role, placed.target) == (role, target)
    assert cur.done


def test_think_first_cursor_grammar():
    c = ThinkFirstCursor(Schedule(), IDS)
    assert c.next_slot() is Slot.THINK_CONTROL and c.forced_token() == IDS.think
    with pytest.raises(FormatError, match="starts with"):
        ThinkFirstCursor(Schedule(), IDS).advance(50)
    assert c.advance(IDS.think).target is False
    assert c.forced_token() is None and c.banned() == {IDS.think, IDS.pad, IDS.eos}
    assert c.advance(50).role is Role.REASONING
    p = c.advance(IDS.speak)
    assert (p.role, p.target) == (Role.CONTROL, True)
    assert c.next_slot() is Slot.SPEAK and c.banned() == {IDS.think, IDS.speak, IDS.pad}
    with pytest.raises(FormatError, match="cannot hold"):
        c.advance(IDS.pad)
    c.advance(60)
    assert c.advance(IDS.eos).role is Role.RESPONSE and c.done
    with pytest.raises(FormatError, match="already ended"):
        c.next_slot()


def test_tis_cursor_bans_and_forces_pads_after_reasoning():
    c = TisCursor(Schedule(1, 2), IDS)
    c.advance(IDS.speak)
    assert c.banned() == {IDS.speak, IDS.think}  # speak slot: text, pad or eos
    c.advance(11)
    c.advance(IDS.think)
    assert c.banned() == {IDS.speak, IDS.think, IDS.eos} and c.forced_token() is None
    bad = TisCursor(Schedule(1, 2), IDS)
    for t in (IDS.speak, 11, IDS.think):
        bad.advance(t)
    with pytest.raises(FormatError, match="cannot hold"):
        bad.advance(IDS.eos)  # eos only ends the response stream
    c.advance(IDS.pad)
    assert c.forced_token() == IDS.pad  # reasoning is contiguous: pads to the end
    p = c.advance(IDS.pad)
    assert (p.role, p.target) == (Role.REASONING, True)  # forced at decoding, still trained


def test_unknown_format():
    with pytest.raises(FormatError, match="unknown format"):
        cursor_for("speak_first", Schedule(), IDS)
    with pytest.raises(FormatError, match="unknown format"):
        build("speak_first", [], [11], [], IDS)
