"""Trainer behaviour on the tiny model: the labels it builds, the lazy data stream, resume and restart.

    .venv/bin/python -m pytest tests/test_trainer.py -q
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from models.format import Role
from models.losses import IGNORE
from tasks.core import checkpoint as ck
from tasks.core.stages import spec


@pytest.fixture(scope="module")
def tiny():
    from audio_data import tiny_setup

    return tiny_setup()


def _sp(tiny, stage, **kw):
    return replace(tiny.p.stage(stage), **{"max_len": 2048, **kw})


def _data(tiny, stage, fmt="tis", split="train", **kw):
    from tasks.core.examples import StageData

    return StageData(tiny.data, split, tiny.tok, tiny.p, spec(stage), _sp(tiny, stage, **kw), fmt, tiny.codec)


def test_mixed_input_is_a_seeded_share():
    from tasks.core.examples import uses_audio

    m = [uses_audio(i, "mixed", 0.3, seed=0) for i in range(4000)]
    assert abs(1 - sum(m) / len(m) - 0.3) < 0.03
    assert m == [uses_audio(i, "mixed", 0.3, seed=0) for i in range(4000)]
    assert m != [uses_audio(i, "mixed", 0.3, seed=1) for i in range(4000)]
    assert all(uses_audio(i, "audio", 0.3, 0) for i in range(5)) and not any(uses_audio(i, "text", 0.3, 0) for i in range(5))
    assert m == [uses_audio(i, "mixed", 0.3, seed=0, epoch=3) for i in range(4000)]  # mixed: the same every epoch


def test_replay_input_hears_every_row_and_rehearses_text_anew_each_epoch(tiny):
    """acoustic_tis (``replay``): a seeded text_fraction of the examples is asked as text, redrawn each
    epoch, so every spoken row is heard over the epochs; 0 keeps it all spoken."""
    from tasks.core.examples import uses_audio

    e0 = [uses_audio(i, "replay", 0.5, seed=0, epoch=0) for i in range(4000)]
    e1 = [uses_audio(i, "replay", 0.5, seed=0, epoch=1) for i in range(4000)]
    assert abs(sum(e0) / 4000 - 0.5) < 0.03 and abs(sum(e1) / 4000 - 0.5) < 0.03
    assert 0.4 < sum(a != b for a, b in zip(e0, e1)) / 4000 < 0.6  # independent draws per epoch
    assert e0 == [uses_audio(i, "replay", 0.5, seed=0, epoch=0) for i in range(4000)]
    assert all(uses_audio(i, "replay", 0.0, seed=0, epoch=e) for i in range(50) for e in range(3))
    assert spec("acoustic_tis").mixes(0.5) and not spec("acoustic_tis").mixes(0.0) and spec("pretrain").mixes(0.0)
    data = _data(tiny, "acoustic_tis", text_fraction=0.5, words_fraction=0.0)
    forms = {(i, e): data.example(i, e).audio is None for i in range(len(data)) for e in range(2)}
    assert any(forms.values()) and not all(forms.values())
    assert forms == {(i, e): not uses_audio(i, "replay", 0.5, tiny.p.seed, e) for i, e in forms}
    i = next(i for (i, e), text in forms.items() if text and e == 0)
    said = tiny.tok.decode(data.example(i, 0).input_ids)
    assert "<|AUDIO|>" not in said and data.rows[i]["question"] in said
    spoken = _data(tiny, "acoustic_tis", text_fraction=0.0)
    assert all(spoken.example(i, e).audio is not None for i in range(len(spoken)) for e in range(2))


def test_tis_labels_train_every_slot_but_prompt_and_controls(tiny):
    """TiS: IGNORE at the prompt and at the schedule's forced controls; the token itself at response,
    reasoning, pad and eos positions."""
    from models.tokenizer import control_ids

    ids = control_ids(tiny.tok)
    data = _data(tiny, "text_tis", "tis")
    seen = Counter()
    for i in range(len(data)):
        e = data.example(i)
        assert not isinstance(e, str), e
        for tok, lab, role in zip(e.input_ids, e.labels, e.roles):
            if role in (Role.PROMPT, Role.CONTROL):
                assert lab == IGNORE
                assert role == Role.PROMPT or tok in (ids.speak, ids.think)
            else:
                assert lab == tok, (role, tok, lab)
                seen["pad" if tok == ids.pad else "eos" if tok == ids.eos else Role(role).name] += 1
        assert e.labels[-1] == ids.eos  # the sequence ends with the eos that is predicted
        assert e.n_targets == sum(1 for x in e.labels[1:] if x != IGNORE)
    assert seen["pad"] and seen["eos"] == len(data) and seen["RESPONSE"] and seen["REASONING"]


def test_think_first_labels_train_the_speak_that_ends_reasoning(tiny):
    """Think-first: the model decides when reasoning ends by predicting <|speak|>; the opening <|think|>
    is forced (no loss)."""
    from models.tokenizer import control_ids

    ids = control_ids(tiny.tok)
    data = _data(tiny, "text_tis", "think_first")
    for i in range(len(data)):
        e = data.example(i)
        body = e.input_ids.index(ids.think)
        assert e.labels[body] == IGNORE and all(x == IGNORE for x in e.labels[:body])
        speak = e.input_ids.index(ids.speak, body)
        assert e.labels[speak] == ids.speak, "the <|speak|> that ends the reasoning must be a target"
        assert all(lab == tok for tok, lab in zip(e.input_ids[body + 1:], e.labels[body + 1:]))
        assert e.labels[-1] == ids.eos


def test_examples_and_collate(tiny):
    from models.audio import n_audio_tokens
    from tasks.core.examples import collate

    audio_id = tiny.tok.convert_tokens_to_ids("<|AUDIO|>")
    align = _data(tiny, "align")
    ex = align.load_features([align.example(i) for i in range(4)])
    for e in ex:  # one placeholder per audio embedding; the target is the transcript + eos
        assert e.input_ids.count(audio_id) == n_audio_tokens(e.features.shape[1])
        assert e.labels[-1] == tiny.tok.eos_token_id and e.roles[-1] == int(Role.RESPONSE)
    text = _data(tiny, "text_tis").example(0)
    assert text.audio is None and audio_id not in text.input_ids
    b = collate([ex[1], text, ex[2]], tiny.tok.pad_token_id)
    assert b["input_features"].shape[0] == 2  # only audio samples bring features, in batch order
    assert b["feature_attention_mask"].sum(1).tolist() == [ex[1].features.shape[1], ex[2].features.shape[1]]
    assert (b["input_ids"] == audio_id).sum() == sum(n_audio_tokens(int(x)) for x in b["feature_attention_mask"].sum(1))
    with pytest.raises(ValueError, match="load_features"):
        collate([align.example(0)], tiny.tok.pad_token_id)
    talker = _data(tiny, "talker")
    tex = [talker.example(i) for i in range(3)]
    b = collate(talker.load_features(tex), tiny.tok.pad_token_id)
    assert [int((r != IGNORE).sum()) for r in b["codes"]] == [len(e.codes) for e in tex]
    assert max(max(e.codes) for e in tex) < 1024  # codec ids fit below the tiny talker's control ids


def test_stream_reads_one_permutation_per_epoch(tiny):
    from tasks.core.examples import BatchStream

    data = _data(tiny, "text_tis")
    n = len(data)
    s = BatchStream(data, batch_size=3, seed=5)
    order = [s._index(k) for k in range(3 * n)]
    for e in range(3):  # every epoch reads every row exactly once, in a new order
        assert sorted(order[e * n:(e + 1) * n]) == list(range(n))
    assert order[:n] != order[n:2 * n]
    again = BatchStream(data, batch_size=3, seed=5)
    assert [again._index(k) for k in range(3 * n)] == order  # seeded
    # A stream resumed at a cursor hands out exactly the batches the uninterrupted one does.
    a = BatchStream(data, 3, 5)
    ref = [[e.input_ids for e in a.next_batch()] for _ in range(7)]
    b = BatchStream(data, 3, 5)
    [b.next_batch() for _ in range(4)]
    c = BatchStream(data, 3, 5, cursor=b.cursor)
    assert [[e.input_ids for e in c.next_batch()] for _ in range(3)] == ref[4:]


def _pad_share(batches) -> float:
    pad = sum(len(b) * max(len(e.input_ids) for e in b) for b in batches)
    return 1 - sum(len(e.input_ids) for b in batches for e in b) / pad


def test_a_length_group_spans_at_most_one_epoch(tiny):
    """A group larger than the data would hold every row several times, sorted side by side: a batch of
    a small set (the overfit tests' two rows) became one row repeated. Groups stop at one epoch."""
    from tasks.core.examples import BatchStream

    data = _data(tiny, "text_tis")
    n = len(data)
    whole = BatchStream(data, n, 5, length_group=4)  # one batch is the whole set: nothing to group
    for _ in range(3):
        ids = [tuple(e.input_ids) for e in whole.next_batch()]
        assert len(set(ids)) == n, "a batch of the whole set holds a row twice"
    assert whole.length_group == 1
    half = BatchStream(data, n // 2, 5, length_group=8)
    assert half.length_group == 2
    with pytest.raises(ValueError, match="group_batch"):
        BatchStream(data, n // 2, 5, length_group=8, group_batch=3)


def test_length_groups_read_the_same_rows_with_less_padding(tiny):
    """trainer.length_group: a group of G batches holds exactly the rows the plain stream reads there
    (every row once per epoch), pads far less, deals its batches in a shuffled order, and a stream
    resumed at (cursor, group_batch) in the middle of a group hands out the same batches."""
    from tasks.core.examples import BatchStream

    data = _data(tiny, "text_tis")
    bs, g = 2, 4
    plain = BatchStream(data, bs, 5)
    flat = [plain.next_batch() for _ in range(3 * g)]
    grouped = BatchStream(data, bs, 5, length_group=g)
    got = [grouped.next_batch() for _ in range(3 * g)]
    key = lambda b: sorted(tuple(e.input_ids) for e in b)  # noqa: E731
    for k in range(3):  # group k = the plain stream's rows k*g*bs .. (k+1)*g*bs, re-dealt
        assert key(sum(got[k * g:(k + 1) * g], [])) == key(sum(flat[k * g:(k + 1) * g], []))
    assert grouped.cursor == plain.cursor and grouped.group_batch == 0
    assert _pad_share(got) < 0.5 * _pad_share(flat)
    means = [sum(len(e.input_ids) for e in b) / bs for b in got]
    assert any(means[k * g:(k + 1) * g] != sorted(means[k * g:(k + 1) * g]) for k in range(3))  # not dealt short-first

    a = BatchStream(data, bs, 5, length_group=g)
    a.next_batch()
    b = BatchStream(data, bs, 5, length_group=g)
    [b.next_batch() for _ in range(g + 2)]  # mid-way through the second group
    assert (b.cursor, b.group_batch) == (plain_cursor_after(data, bs, g), 2)
    c = BatchStream(data, bs, 5, b.cursor, length_group=g, group_batch=b.group_batch)
    assert [[e.input_ids for e in c.next_batch()] for _ in range(g)] == [[e.input_ids for e in x] for x in got[g + 2:2 * g + 2]]
    with pytest.raises(ValueError, match="length_group"):
        BatchStream(data, bs, 5, length_group=0)
    with pytest.raises(ValueError, match="group_batch"):
        BatchStream(data, bs, 5, length_group=g, group_batch=g)


def plain_cursor_after(data, bs: int, g: int) -> int:
    """Where the plain stream stands after one group's rows (no row of the tiny data is dropped)."""
    from tasks.core.examples import BatchStream

    s = BatchStream(data, bs, 5)
    [s.next_batch() for _ in range(g)]
    return s.cursor


def test_rows_that_do_not_fit_are_skipped_and_counted(tiny):
    from tasks.core.examples import BatchStream

    data = _data(tiny, "text_tis")
    lengths = sorted(len(data.example(i).input_ids) for i in range(len(data)))
    short = _data(tiny, "text_tis", max_len=lengths[len(lengths) // 2])
    s = BatchStream(short, 4, 0)
    for _ in range(5):
        assert all(len(e.input_ids) <= short.sp.max_len for e in s.next_batch())
    assert s.dropped["too_long"] > 0
    with pytest.raises(ValueError, match="max_len"):
        BatchStream(_data(tiny, "text_tis", max_len=16), 2, 0).next_batch()


def test_feature_cache_is_bounded(tiny):
    from tasks.core.examples import FeatureCache

    data = _data(tiny, "align")
    paths = [data.example(i).audio for i in range(6)]
    one = FeatureCache(10_000).get(paths[0])
    size = one.numel() * one.element_size()
    cache = FeatureCache(max_mb=0)
    cache.max_bytes = int(size * 2.5)  # room for about two clips
    for p in paths:
        cache.get(p)
    assert cache.bytes <= cache.max_bytes and len(cache.items) <= 3
    cache.get(paths[-1])
    assert cache.hits == 1 and cache.misses == 6


@pytest.mark.parametrize("length_group", [1, 4])
def test_resume_after_stop_reproduces_the_run(tiny, tmp_path, length_group):
    """Stop after step 3 (its checkpoint lost, a half-written one left): the rerun resumes at step 2
    and ends with the same loss history as an uninterrupted run; with length groups of 4 batches, step 2
    is inside a group, so the checkpoint must carry the group's place."""
    import shutil

    from tasks.core.trainer import train

    p = replace(tiny.p, trainer=replace(tiny.p.trainer, length_group=length_group))
    sp = _sp(tiny, "pretrain", steps=4, batch_size=2, lr=2e-3, warmup_steps=1, max_len=1024)
    a = train("pretrain", p, sp, tiny.data, tiny.init, tmp_path / "a")
    b_dir = tmp_path / "b"
    b1 = train("pretrain", p, sp, tiny.data, tiny.init, b_dir, stop_after=3)
    assert b1.steps == 3 and [s for s, _ in ck.step_dirs(b_dir)] == [2, 3]
    shutil.rmtree(b_dir / ck.step_name(3))  # the stop came before step 3 was saved ...
    (b_dir / f".{ck.step_name(4)}.abc.tmp" / "model").mkdir(parents=True)  # ... while step 4 was half written
    b2 = train("pretrain", p, sp, tiny.data, tiny.init, b_dir)
    assert b2.resumed and b2.start_step == 2 and b2.steps == 4
    np.testing.assert_allclose([l for _, l in b2.history], [l for _, l in a.history], rtol=1e-5)
    assert [s for s, _ in b2.history] == [1, 2, 3, 4]
    assert b2.val_loss == pytest.approx(a.val_loss, rel=1e-5)
    assert not [x for x in b_dir.iterdir() if ".tmp" in x.name]


def test_changed_params_restart_instead_of_resuming(tiny, tmp_path):
    from tasks.core.trainer import train

    sp = _sp(tiny, "text_tis", steps=1, batch_size=2, warmup_steps=0, max_len=1024)
    train("text_tis", tiny.p, sp, tiny.data, tiny.init, tmp_path / "o")
    res = train("text_tis", tiny.p, replace(sp, lr=5e-3), tiny.data, tiny.init, tmp_path / "o")
    assert not res.resumed and res.start_step == 0


def test_more_steps_continue_fewer_steps_start_over(tiny, tmp_path):
    """`dvc exp run -S <stage>.steps=N`: N above the checkpoint extends it, N below retrains to N."""
    from tasks.core.trainer import train

    sp = _sp(tiny, "text_tis", steps=2, batch_size=2, warmup_steps=0, max_len=1024)
    train("text_tis", tiny.p, sp, tiny.data, tiny.init, tmp_path / "o")
    more = train("text_tis", tiny.p, replace(sp, steps=3), tiny.data, tiny.init, tmp_path / "o")
    assert more.resumed and more.start_step == 2 and more.steps == 3
    fewer = train("text_tis", tiny.p, replace(sp, steps=1), tiny.data, tiny.init, tmp_path / "o")
    assert not fewer.resumed and fewer.start_step == 0 and fewer.steps == 1
    assert [s for s, _ in ck.step_dirs(tmp_path / "o")] == [1]


def test_ds_config_follows_params():
    from tasks.core.distributed import ds_config
    from tasks.core.params import load_params

    t = load_params(overrides={"trainer": {"zero_stage": 2, "grad_accum": 4, "precision": "bf16"}}).trainer
    c = ds_config(t, micro_batch=2, world=8)
    assert c["zero_optimization"]["stage"] == 2 and c["gradient_accumulation_steps"] == 4
    assert c["train_batch_size"] == 2 * 4 * 8 and c["bf16"]["enabled"] is True
    assert c["gradient_clipping"] == t.grad_clip
    assert ds_config(replace(t, precision="fp32"), 1, 1)["bf16"]["enabled"] is False


@pytest.mark.parametrize("learn,timing", [(False, "aligned"), (True, "aligned"), (True, "estimated")],
                         ids=["estimate", "learned", "learned-estimated-timing"])
def test_the_talker_stage_paces_by_seconds_measured_on_its_own_speech(tiny, learn, timing):
    """talker.seconds: learned. The stage learns each token's seconds on its training speech's espeak
    timing and keeps them in the checkpoint's config; the frames per second it measures with them is the
    codec's real rate (~50 frames a second of speech), where the estimate's is frames per *estimated*
    second. estimate: nothing learned is kept. With talker.timing: estimated (frames spread by the estimate)
    the timing is still read to learn from (it once was not, and the stage failed saying the data had none),
    while the examples carry no aligned frames."""
    from models.omni import load_checkpoint
    from models.talker import pace_of, token_seconds
    from tasks.core.trainer import _set_talker_pace

    data = _data(tiny, "talker", timing=timing)
    assert data.aligned == (timing == "aligned")
    model, _ = load_checkpoint(tiny.init)
    _set_talker_pace(model, tiny.tok, "duration", data, "talker", 0, numbers=True, learn=learn)
    cfg, pace = model.config.talker_config, pace_of(model)
    assert cfg.tis_pace == "duration" and cfg.tis_pace_numbers and pace.frames_per_second > 0
    if not learn:
        assert cfg.tis_pace_learned is None and torch_equal(pace.seconds, token_seconds(tiny.tok))
        return
    learned = cfg.tis_pace_learned
    assert learned["responses"] == sum(1 for i in range(len(data)) if data.rows[i].get("response_starts"))
    assert learned["seconds"] and not torch_equal(pace.seconds, token_seconds(tiny.tok))
    frames = sum(len(data.codes(r["response_audio"])) / data.codes.codebooks
                 for r in (data.rows[i] for i in range(len(data))))
    seconds = sum(float(data.rows[i]["response_seconds"]) for i in range(len(data)))
    assert pace.frames_per_second == pytest.approx(frames / seconds, rel=0.15)  # seconds of real speech


def test_the_talker_stage_reads_the_frozen_thinkers_states_from_its_cache(tiny, tmp_path, caplog):
    """trainer.state_cache_mb: the talker stage keeps the frozen thinker's states of the rows it trained on and,
    once every row of a batch is kept (the second epoch), reads them instead of running the thinker: the same
    losses step for step and the same validation loss as a run that recomputes them (0 MB)."""
    import logging

    from tasks.core.trainer import train

    sp = _sp(tiny, "talker", steps=16, batch_size=2, warmup_steps=1, lr=5e-3)
    runs = {}
    for mb in (0, 64):
        p = replace(tiny.p, trainer=replace(tiny.p.trainer, state_cache_mb=mb, checkpoint_every=100))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="trainer"):
            runs[mb] = train("talker", p, sp, tiny.data, tiny.init, tmp_path / str(mb), codec_dir=tiny.codec)
        runs[mb].kept = [r.getMessage() for r in caplog.records if "states of" in r.getMessage()]
    assert runs[0].kept == []  # 0 MB: no cache at all
    rows = len(_data(tiny, "talker"))
    assert f"states of {rows} rows kept" in runs[64].kept[0] and " 0 batches read them" not in runs[64].kept[0]
    np.testing.assert_allclose([x for _, x in runs[64].history], [x for _, x in runs[0].history], rtol=1e-5)
    assert runs[64].val_loss == pytest.approx(runs[0].val_loss, rel=1e-5)


def test_the_thinker_state_cache_keeps_what_fits_and_only_for_a_frozen_thinker_in_training(tiny):
    """Rows past the size bound are not kept (a batch with one of them runs the thinker); a thinker that trains,
    a model in eval mode or a batch without row keys never touch the cache; a negative size is an error."""
    import torch

    from models.omni import load_checkpoint
    from models.talker import ThinkerStateCache
    from tasks.core.examples import collate

    model, _ = load_checkpoint(tiny.init)
    data = _data(tiny, "talker")
    batch = collate(data.load_features([data.example(i) for i in range(2)]), tiny.tok.pad_token_id)
    n = [int(x) for x in batch["attention_mask"].sum(-1)]
    h = torch.randn(2, batch["input_ids"].shape[1], 8)
    for q in model.thinker.parameters():
        q.requires_grad_(False)
    model.train()
    one_row = n[0] * 8 * 4 / 2**20  # MB of the first row's states (8 wide, fp32)
    small = ThinkerStateCache(one_row)
    assert small.usable(model, batch)
    assert small.hidden(model, batch, lambda: h) is h and list(small.rows) == [int(batch["row_keys"][0])]
    assert small.hidden(model, batch, lambda: h) is h and (small.hits, small.misses) == (0, 2)  # row 2 never fits
    big = ThinkerStateCache(1)
    big.hidden(model, batch, lambda: h)
    again = big.hidden(model, batch, lambda: pytest.fail("the thinker ran for rows the cache holds"))
    for i in range(2):
        assert torch.equal(again[i, :n[i]], h[i, :n[i]]) and not again[i, n[i]:].any()
    assert (big.hits, big.misses, big.bytes) == (1, 1, sum(n) * 8 * 4)
    assert not big.usable(model, {k: v for k, v in batch.items() if k != "row_keys"})
    model.eval()
    assert not big.usable(model, batch)
    model.train()
    next(model.thinker.parameters()).requires_grad_(True)
    assert not big.usable(model, batch)
    with pytest.raises(ValueError, match="must be >= 0 MB"):
        ThinkerStateCache(-1)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_trainer_talker_loss_sees_only_response_positions(tiny, monkeypatch):
    """Through the trainer's own talker loss (real batch from StageData + collate, real roles): the
    thinker's states at every prompt, control, reasoning and batch-padding position of every sample
    replaced by noise at once -> the same loss; one response position perturbed -> another loss."""
    import torch
    from transformers import Qwen2_5OmniForConditionalGeneration

    import models.talker as talker
    from models.losses import talker_loss_sum
    from tasks.core.examples import collate

    data = _data(tiny, "talker")
    batch = collate(data.load_features([data.example(i) for i in range(3)]), tiny.tok.pad_token_id)
    roles = batch["roles"]
    assert {int(Role.PROMPT), int(Role.CONTROL), int(Role.REASONING), -1} <= set(roles.unique().tolist())
    model = Qwen2_5OmniForConditionalGeneration.from_pretrained(str(tiny.init / "model"), dtype=torch.float32).eval()
    real = talker.thinker_states
    g = torch.Generator().manual_seed(0)

    def noisy(where):
        def states(model, **kw):
            h, e = real(model, **kw)
            h, e = h.clone(), e.clone()
            h[where] = torch.randn(h[where].shape, generator=g) * 3
            e[where] = torch.randn(e[where].shape, generator=g) * 3
            return h, e
        return states

    with torch.no_grad():
        base = talker_loss_sum(model, batch, codebooks=data.codes.codebooks)
        monkeypatch.setattr(talker, "thinker_states", noisy(roles != int(Role.RESPONSE)))
        other = talker_loss_sum(model, batch, codebooks=data.codes.codebooks)
        one = torch.zeros_like(roles, dtype=torch.bool)
        one[1, (roles[1] == int(Role.RESPONSE)).nonzero()[3]] = True
        monkeypatch.setattr(talker, "thinker_states", noisy(one))
        moved = talker_loss_sum(model, batch, codebooks=data.codes.codebooks)
    assert torch.equal(base, other)
    assert abs(float(moved) - float(base)) > 1e-2, (float(base), float(moved))


def test_probe_curve_is_logged_bounded_and_survives_a_resume(tiny, tmp_path):
    """The held-out probe runs every probe_every steps and after the last, on validation rows spread over
    the problem kinds; a resumed run keeps the earlier points; an untrained model that never stops costs
    no more than its reference answers' length."""
    from tasks.core.probe import Probe
    from tasks.core.trainer import train

    sp = _sp(tiny, "text_tis", steps=3, batch_size=2, warmup_steps=0, max_len=1024, probe_every=2, probe_problems=3)
    logged = []

    class Tracker:
        def metrics(self, values, step=None):
            logged.append((step, values))

    first = train("text_tis", tiny.p, sp, tiny.data, tiny.init, tmp_path / "o", tracker=Tracker(), stop_after=2)
    assert [s for s, _ in first.probes] == [2]
    res = train("text_tis", tiny.p, sp, tiny.data, tiny.init, tmp_path / "o", tracker=Tracker())
    assert res.resumed and [s for s, _ in res.probes] == [2, 3]
    for _, m in res.probes:
        assert 0.0 <= m["probe/accuracy"] <= 1.0 and len(m) >= 2  # overall + at least one kind
    assert [s for s, v in logged if "probe/accuracy" in v] == [2, 3]
    probe = Probe(_data(tiny, "text_tis", split="validation"), "tis", 3, max_new_tokens=1024)
    data = _data(tiny, "text_tis", split="validation")
    refs = [sum(r != 0 for r in e.roles) for e in data.all_examples()[0]]
    assert len(probe) == min(3, len(refs)) and max(probe.limits) <= max(refs) + 16


def test_a_replay_stage_is_probed_on_what_it_hears(tiny):
    """acoustic_tis asks a share of its training examples as text, but its probe asks spoken questions."""
    from tasks.core.probe import Probe

    assert Probe(_data(tiny, "acoustic_tis", split="validation", text_fraction=0.5), "tis", 2, max_new_tokens=64).audio
    assert not Probe(_data(tiny, "text_tis", split="validation"), "tis", 2, max_new_tokens=64).audio


@pytest.mark.parametrize("stage", ["text_tis", "acoustic_tis"])
def test_probe_decodes_its_rows_together_as_each_alone(tiny, stage):
    """The probe steps all its answers together (one batched forward a position); each row's response is
    exactly what its own session gives alone, in the row's place."""
    from models.events import DoneEvent
    from models.omni import load_checkpoint
    from models.session import Engine, Options
    from tasks.core.probe import Probe

    import soundfile as sf
    import torch

    probe = Probe(_data(tiny, stage, split="validation"), "tis", 3, max_new_tokens=48)
    model, tok = load_checkpoint(ck.latest(tiny.init), torch.float32)
    together = probe.responses(model, tok)
    alone = []
    engine = Engine(model, tok, slots=1)
    for row, limit in zip(probe.rows, probe.limits):
        opts = Options(fmt="tis", speak=probe.schedule.speak, think=probe.schedule.think, max_new_tokens=limit,
                       audio=False, reasoning=False)
        if probe.audio:
            wave, sr = sf.read(str(probe.data.data_dir / row["question_audio"]), dtype="float32")
            session = engine.session(audio=(wave, sr), options=opts)
        else:
            session = engine.session(text=row["spoken_question"] or row["question"], options=opts)
        alone.append(next(ev for ev in session if isinstance(ev, DoneEvent)).response)
    assert len(together) == len(probe) >= 2
    assert stage != "text_tis" or len(set(alone)) > 1  # distinct answers, so a swap of rows would show
    assert together == alone


def test_probe_scores_the_stated_answer():
    from tasks.core.probe import is_right

    assert is_right("Forty plus two is 42. The answer is 42.", "42")
    assert is_right("It comes to 1,200. The answer is 1200.", "1200.0")
    assert not is_right("42 is close. The answer is 24.", "42")
    assert not is_right("I do not know.", "42")


def test_text_prompts_mix_digits_and_words_and_the_pool_replaces_train_rows(tiny, tmp_path):
    """words_fraction: that share of text prompts reads the spoken question (numbers in words), drawn anew
    each epoch; text_pool: a text stage trains on text.parquet when the dataset has one."""
    import shutil

    from tasks.core.examples import in_words

    draws = [in_words(i, 0, 0.5, 0) for i in range(400)]
    assert 0.4 < sum(draws) / len(draws) < 0.6
    assert draws != [in_words(i, 1, 0.5, 0) for i in range(400)]  # another epoch, other rows in words
    assert not any(in_words(i, 0, 0.0, 0) for i in range(50))
    import pyarrow.parquet as pq

    from tasks.core.examples import StageData
    from tasks.synth.verbalize import speakable

    pooled = tmp_path / "data"
    shutil.copytree(tiny.data, pooled)
    t = pq.read_table(pooled / "validation.parquet")  # the pool: validation rows, spoken form in words
    words = [speakable(q) for q in t.column("question").to_pylist()]
    t = t.set_column(t.schema.get_field_index("spoken_question"), "spoken_question", __import__("pyarrow").array(words))
    pq.write_table(t, pooled / "text.parquet")
    sp = _sp(tiny, "text_tis", text_pool=True, words_fraction=1.0)
    data = StageData(pooled, "train", tiny.tok, tiny.p, spec("text_tis"), sp, "tis")
    assert data.pooled and len(data) == t.num_rows
    i = next(i for i in range(len(data)) if any(c.isdigit() for c in data.rows[i]["question"]))
    # Both forms reach the thinker with their numbers as digits (models.tokenizer.numbers_as_digits): the
    # words draw reads the spoken column, so a transcript's wording (and ITN's forms) is what it learns from.
    marked = StageData(pooled, "train", tiny.tok, tiny.p, spec("text_tis"), sp, "tis")
    marked.rows = [dict(marked.rows[k]) for k in range(len(marked))]
    marked.rows[i]["spoken_question"] = "The transcript says twenty-one."
    assert "The transcript says 21." in tiny.tok.decode(marked.example(i).input_ids)
    text = tiny.tok.decode(data.example(i).input_ids)
    assert not any(w in text for w in ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))
    digits = StageData(pooled, "train", tiny.tok, tiny.p, spec("text_tis"), replace(sp, words_fraction=0.0), "tis")
    digits.rows = marked.rows
    assert data.rows[i]["question"] in tiny.tok.decode(digits.example(i).input_ids)
    assert not StageData(pooled, "train", tiny.tok, tiny.p, spec("text_tis"), replace(sp, text_pool=False), "tis").pooled
    audio = StageData(pooled, "train", tiny.tok, tiny.p, spec("acoustic_tis"), _sp(tiny, "acoustic_tis"), "tis")
    assert not audio.pooled


def test_a_mixed_stage_on_the_pool_asks_text_from_the_pool_and_audio_from_the_spoken_rows(tiny, tmp_path):
    """pretrain.text_pool: a mixed stage's text examples come from text.parquet (many problems, no TTS) and
    its spoken examples from the spoken train rows, each with its own audio; without the flag, only train."""
    import shutil
    from pathlib import Path

    import pyarrow.parquet as pq

    from tasks.core.examples import StageData, uses_audio

    pooled = tmp_path / "data"
    shutil.copytree(tiny.data, pooled)
    import pandas as pd

    train = pq.read_table(pooled / "train.parquet").to_pandas()
    rows = pd.concat([train] * 3, ignore_index=True)  # a pool larger than the spoken set
    rows["question"] = [f"Pool problem {k}: what is {k} plus 1?" for k in range(len(rows))]
    rows["question_audio"] = ""  # the pool has no audio
    pq.write_table(__import__("pyarrow").Table.from_pandas(rows, preserve_index=False), pooled / "text.parquet")
    sp = _sp(tiny, "pretrain", text_pool=True, text_fraction=0.5, words_fraction=0.0)
    data = StageData(pooled, "train", tiny.tok, tiny.p, spec("pretrain"), sp, "tis")
    assert data.pooled and len(data) == len(rows) > len(train)
    seen_text = seen_audio = 0
    for i in range(len(data)):
        e = data.example(i)
        assert not isinstance(e, str), e
        if uses_audio(i, "mixed", 0.5, tiny.p.seed):
            assert e.audio is not None and e.audio.name == Path(train.question_audio[i % len(train)]).name
            seen_audio += 1
        else:
            assert e.audio is None and f"Pool problem {i}:" in tiny.tok.decode(e.input_ids)
            seen_text += 1
    assert seen_text and seen_audio
    off = StageData(pooled, "train", tiny.tok, tiny.p, spec("pretrain"), replace(sp, text_pool=False), "tis")
    assert not off.pooled and len(off) == len(train)
    assert not any("Pool problem" in tiny.tok.decode(off.example(i).input_ids) for i in range(len(off)))
