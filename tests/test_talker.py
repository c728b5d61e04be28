"""Talker tests on a tiny Qwen2.5-Omni: loss, frozen thinker, learning, response-only visibility.

    .venv/bin/python -m pytest tests/test_talker.py -q
"""

from __future__ import annotations

import pytest
import torch

from models.format import Role, Schedule, interleave
from models.omni import TinyDims, build_tiny
from models.talker import (
    ROLE_PAD,
    build_talker_inputs,
    codebook_mask,
    generate_codes,
    talker_forward,
    talker_loss,
    thinker_states,
)
from models.tokenizer import control_ids, encode, text_prompt, train_bpe

TEXTS = ["Tom has three apples and buys twelve more.", "three plus twelve is fifteen", "The answer is 15."] * 20
SIZES = (8, 16, 16)  # a toy 3-codebook codec: 40 ids


@pytest.fixture(scope="module")
def setup():
    tok = train_bpe(TEXTS, vocab_size=400)
    model = build_tiny(TinyDims(), tok)
    model.thinker.requires_grad_(False)  # the talker stage trains only the talker
    ids = control_ids(tok)
    layouts = [
        interleave(text_prompt(tok, "Tom has three apples."), encode(tok, "The answer is 15."),
                   encode(tok, "three plus twelve is fifteen"), ids, Schedule(2, 8), delay_eos=True),
        interleave(text_prompt(tok, "How many?"), encode(tok, "Fifteen."), encode(tok, "3+12=15"), ids,
                   Schedule(2, 8), delay_eos=True),
    ]
    t = max(len(l) for l in layouts)
    input_ids = torch.tensor([l.input_ids + [tok.pad_token_id] * (t - len(l)) for l in layouts])
    am = torch.tensor([[1] * len(l) + [0] * (t - len(l)) for l in layouts])
    roles = torch.tensor([[int(r) for r in l.roles] + [ROLE_PAD] * (t - len(l)) for l in layouts])
    hidden, embeds = thinker_states(model, input_ids=input_ids, attention_mask=am)
    g = torch.Generator().manual_seed(0)
    codes = [torch.randint(0, 40, (n,), generator=g).tolist() for n in (30, 21)]
    return model, tok, hidden, embeds, roles, codes


def test_loss_finite_and_only_talker_learns(setup):
    model, _, hidden, embeds, roles, codes = setup
    assert not hidden.requires_grad  # frozen thinker: states carry no graph
    model.zero_grad()
    loss = talker_loss(model, hidden, embeds, roles, codes)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert all(p.grad is None for p in model.thinker.parameters())
    assert all(p.grad is None for p in model.token2wav.parameters())
    got = [n for n, p in model.talker.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert any("thinker_to_talker_proj" in n for n in got) and any("codec_head" in n for n in got)
    model.zero_grad()


def test_layout_and_labels(setup):
    model, _, hidden, embeds, roles, codes = setup
    x = build_talker_inputs(model, hidden, embeds, roles, codes)
    p0 = int((roles[0] == int(Role.PROMPT)).sum())
    lab = x.labels[0]
    assert (lab[: p0 + 1] == -100).all()
    assert lab[p0 + 1 : p0 + 1 + len(codes[0])].tolist() == codes[0]
    assert int(lab[p0 + 1 + len(codes[0])]) == model.talker.codec_eos_token
    # The shorter sample is right-padded and masked.
    p1 = int((roles[1] == int(Role.PROMPT)).sum())
    assert int(x.attention_mask[1].sum()) == p1 + 1 + len(codes[1]) + 1


def test_talker_sees_only_response_positions(setup):
    model, _, hidden, embeds, roles, codes = setup
    with torch.no_grad():
        base = talker_loss(model, hidden, embeds, roles, codes)
        for role in (Role.PROMPT, Role.REASONING, Role.CONTROL):
            pos = int((roles[0] == int(role)).nonzero()[-1])
            h = hidden.clone()
            h[0, pos] += 5.0
            e = embeds.clone()
            e[0, pos] -= 3.0
            assert torch.equal(talker_loss(model, h, e, roles, codes), base), role
        pos = int((roles[0] == int(Role.RESPONSE)).nonzero()[0])
        h = hidden.clone()
        h[0, pos] += 5.0
        assert not torch.allclose(talker_loss(model, h, embeds, roles, codes), base)


def test_loss_falls_in_20_steps(setup):
    model, _, hidden, embeds, roles, codes = setup
    state = {k: v.clone() for k, v in model.talker.state_dict().items()}
    opt = torch.optim.AdamW(model.talker.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = talker_loss(model, hidden[:1], embeds[:1], roles[:1], codes[:1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(f"talker loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < 0.6 * losses[0]
    model.talker.load_state_dict(state)


def test_generate_matches_teacher_forcing(setup):
    model, _, hidden, embeds, roles, _ = setup
    n = roles.shape[1] if roles[0, -1] != ROLE_PAD else int((roles[0] != ROLE_PAD).sum())
    h, e, r = hidden[:1, :n], embeds[:1, :n], roles[:1, :n]
    ids = generate_codes(model, h, e, r, max_new_tokens=12, codebook_sizes=SIZES)
    assert len(ids) % len(SIZES) == 0 or len(ids) == 12
    for k, i in enumerate(ids):  # each step emitted an id of its own codebook
        off = sum(SIZES[: k % 3])
        assert off <= i < off + SIZES[k % 3]
    # Feeding the generated ids back teacher-forced must reproduce them (same layout both ways).
    x = build_talker_inputs(model, h, e, r, [ids])
    with torch.no_grad():
        logits = talker_forward(model, x)[0]
    p = int((r[0] == int(Role.PROMPT)).sum())
    for k, i in enumerate(ids):
        allowed = codebook_mask(k, logits.shape[-1], model.talker.codec_pad_token, model.talker.codec_eos_token, SIZES)
        assert int(logits[p + 1 + k].masked_fill(~allowed, float("-inf")).argmax()) == i


def test_generate_stops_at_eos(setup):
    model, _, hidden, embeds, roles, _ = setup
    t = model.talker
    saved = t.codec_head.weight.data.clone()
    t.codec_head.weight.data.zero_()
    t.codec_head.weight.data[t.codec_eos_token] = 1.0  # eos always wins once allowed
    try:
        n = int((roles[0] != ROLE_PAD).sum())
        assert generate_codes(model, hidden[:1, :n], embeds[:1, :n], roles[:1, :n], codebook_sizes=SIZES) == []
    finally:
        t.codec_head.weight.data.copy_(saved)


def test_errors(setup):
    model, _, hidden, embeds, roles, codes = setup
    with pytest.raises(ValueError, match="below the talker's control ids"):
        talker_loss(model, hidden, embeds, roles, [[model.talker.codec_pad_token], codes[1]])
    no_resp = roles.clone()
    no_resp[0][no_resp[0] == int(Role.RESPONSE)] = int(Role.REASONING)
    with pytest.raises(ValueError, match="no RESPONSE positions"):
        talker_loss(model, hidden, embeds, no_resp, codes)
    with pytest.raises(ValueError, match="roles has shape"):
        talker_loss(model, hidden, embeds, roles[:, :-1], codes)
    with pytest.raises(ValueError, match="one sample"):
        generate_codes(model, hidden, embeds, roles)
