"""Every training stage trains on the tiny model, exactly its 🔥 module groups learn, and its loss falls.

One real optimizer step per stage and phase (both sequence formats where the target depends on
it); after it, every group the report trains has changed and every frozen group is bit-identical.
Then, through the real ``train()``, every stage and format overfits a fixed batch (last loss <= 0.7 x
first) and lowers its validation loss.

    .venv/bin/python -m pytest tests/test_stages.py -q
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from models.modules import GROUPS, group_of
from tasks.core import checkpoint as ck
from tasks.core.stages import ORDER, STAGES, TARGETS, spec

# The report's freeze table (DESIGN.md), restated here so the stage table is checked against it.
REPORT = {
    "align_1a": {"adapter"},
    "align_1b": {"adapter", "embedding", "thinker_llm"},
    "pretrain": {"adapter", "embedding", "thinker_llm"},
    "text_tis": {"embedding", "thinker_llm"},
    "acoustic_tis": {"adapter", "thinker_llm"},
    "talker": {"talker"},
}


@pytest.fixture(scope="module")
def tiny():
    from audio_data import tiny_setup

    return tiny_setup()


RUNS = [(s, f) for s in ORDER for f in (("tis", "think_first") if spec(s).per_format else (None,))]


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    """Parameters by their in-memory names (the group table's names; files use legacy names)."""
    from transformers import Qwen2_5OmniForConditionalGeneration

    m = Qwen2_5OmniForConditionalGeneration.from_pretrained(str(ckpt / "model"), dtype=torch.float32)
    return {k: v.detach() for k, v in m.named_parameters()}


def changed_groups(a: dict, b: dict) -> set[str]:
    assert a.keys() == b.keys()
    return {group_of(k) for k in a if not torch.equal(a[k], b[k])}


def test_table_matches_report():
    assert tuple(STAGES) == ("align", "pretrain", "text_tis", "acoustic_tis", "talker")
    assert {ph.name: set(ph.trainable) for s in STAGES.values() for ph in s.phases} == REPORT
    assert all(s.target in TARGETS for s in STAGES.values())
    assert [s.upstream for s in STAGES.values()] == ["init_model", *ORDER[:-1]]
    assert {s for s in ORDER if spec(s).per_format} == {"text_tis", "acoustic_tis", "talker"}
    for s in STAGES.values():
        assert s.trainable <= set(GROUPS) - {"audio_encoder", "codec_decoder", "vision"}


def hot(phase: str, encoder: bool) -> set[str]:
    """The groups a phase trains: the report's, plus the audio encoder wherever the adapter trains when the
    model's encoder is trained (``model.audio_encoder``; auto: a model built from config, whose encoder is random)."""
    return REPORT[phase] | ({"audio_encoder"} if encoder and "adapter" in REPORT[phase] else set())


def test_the_audio_encoder_trains_with_its_adapter_only_when_asked():
    from tasks.core.stages import trains_audio_encoder, with_audio_encoder

    def p(choice, source):
        return type("P", (), {"model": type("M", (), {"audio_encoder": choice, "source": source, "keep_ear": "off"})})()

    assert trains_audio_encoder(p("auto", "tiny")) and not trains_audio_encoder(p("auto", "/ckpt/Qwen2.5-Omni-3B"))
    assert trains_audio_encoder(p("train", "Qwen/Qwen2.5-Omni-3B")) and not trains_audio_encoder(p("frozen", "tiny"))
    for s in STAGES.values():
        assert with_audio_encoder(s, False) == s
        assert {ph.name: set(ph.trainable) for ph in with_audio_encoder(s, True).phases} == {
            ph.name: hot(ph.name, True) for ph in s.phases}


def test_align_skips_its_adapter_only_phase_when_the_llm_is_random():
    """A model built from config has a random LLM: a frozen one is nothing to align the adapter to, so align
    trains everything from its first step (auto); a checkpoint keeps the report's 1a then 1b."""
    from tasks.core.stages import for_params

    def p(choice, source):
        return type("P", (), {"model": type("M", (), {"audio_encoder": "auto", "source": source, "keep_ear": "off"}),
                              "align": type("A", (), {"adapter_phase": choice})})()

    two = [ph.name for ph in spec("align").phases]
    assert two == ["align_1a", "align_1b"]
    assert [ph.name for ph in for_params("align", p("auto", "tiny")).phases] == ["align_1b"]
    assert for_params("align", p("auto", "tiny")).phase_at(0, 300).name == "align_1b"
    assert [ph.name for ph in for_params("align", p("auto", "/ckpt/Qwen2.5-Omni-3B")).phases] == two
    assert [ph.name for ph in for_params("align", p("on", "tiny")).phases] == two
    assert [ph.name for ph in for_params("align", p("off", "Qwen/Qwen2.5-Omni-3B")).phases] == ["align_1b"]
    assert for_params("pretrain", p("off", "tiny")).phases == with_encoder_phases("pretrain")


def with_encoder_phases(name: str):
    from tasks.core.stages import with_audio_encoder

    return with_audio_encoder(spec(name), True).phases


ENCODER_RUNS = [(s, f, e) for s, f in RUNS for e in ("auto", "frozen") if e == "auto" or s == "align"]


@pytest.mark.parametrize("stage,fmt,encoder", ENCODER_RUNS,
                         ids=[(f"{s}@{f}" if f else s) + ("" if e == "auto" else "-frozen") for s, f, e in ENCODER_RUNS])
def test_one_step_trains_exactly_the_hot_groups(tiny, tmp_path, stage, fmt, encoder):
    """The tiny model (``model.source: tiny``) trains its random audio encoder with the adapter (auto); frozen,
    align trains exactly the report's groups, as a pretrained encoder would be."""
    from tasks.core.trainer import train

    st = spec(stage)
    steps = len(st.phases)  # one optimizer step per phase (align: 1a, then 1b)
    sp = replace(tiny.p.stage(stage), steps=steps, batch_size=2, lr=1e-3, warmup_steps=0, max_len=1024)
    assert tiny.p.model.source == "tiny"
    p = replace(tiny.p, trainer=replace(tiny.p.trainer, checkpoint_every=1, keep_checkpoints=steps),
                model=replace(tiny.p.model, audio_encoder=encoder, keep_ear="off"),  # the report's table
                align=replace(tiny.p.align, adapter_phase="on"))  # the report's 1a then 1b, one step each
    res = train(stage, p, sp, tiny.data, tiny.init, tmp_path / "out", fmt=fmt or "tis", codec_dir=tiny.codec)
    assert res.steps == steps and all(torch.isfinite(torch.tensor(l)) for _, l in res.history)
    assert res.val_loss is not None
    before = weights(ck.latest(tiny.init))
    for (_, d), ph in zip(ck.step_dirs(tmp_path / "out"), st.phases):
        after = weights(d)
        assert changed_groups(before, after) == hot(ph.name, encoder == "auto"), ph.name
        before = after
    assert not [x for x in (tmp_path / "out").iterdir() if ".tmp" in x.name]


@pytest.mark.parametrize("stage,fmt", [("align", None), ("pretrain", None), ("acoustic_tis", "tis")])
def test_keep_ear_freezes_the_ear_after_align(tiny, tmp_path, stage, fmt):
    """``model.keep_ear``: after align, the audio encoder and the adapter stay bit-identical through a real step
    of pretrain and acoustic_tis (their LLM groups still learn); align itself still trains them."""
    from tasks.core.stages import EAR, for_params
    from tasks.core.trainer import train

    from tasks.core.stages import keeps_ear

    def q(choice, source):
        return type("P", (), {"model": type("M", (), {"keep_ear": choice, "source": source})})()

    assert keeps_ear(q("auto", "tiny")) and not keeps_ear(q("auto", "/ckpt/Qwen2.5-Omni-3B"))
    assert keeps_ear(q("on", "Qwen/Qwen2.5-Omni-3B")) and not keeps_ear(q("off", "tiny"))
    p = replace(tiny.p, model=replace(tiny.p.model, keep_ear="on"),
                trainer=replace(tiny.p.trainer, checkpoint_every=1, keep_checkpoints=1))
    assert [ph.name for ph in for_params(stage, p).phases] == [ph.name for ph in for_params(stage, tiny.p).phases]
    sp = replace(p.stage(stage), steps=1, batch_size=2, lr=1e-3, warmup_steps=0, max_len=1024)
    res = train(stage, p, sp, tiny.data, tiny.init, tmp_path / "out", fmt=fmt or "tis", codec_dir=tiny.codec)
    assert res.steps == 1
    changed = changed_groups(weights(ck.latest(tiny.init)), weights(ck.latest(tmp_path / "out")))
    last = for_params(stage, tiny.p).phases[-1].name
    want = hot(last, True) if stage == "align" else REPORT[last] - EAR
    assert changed == want and want & {"embedding", "thinker_llm"}


def test_stage_modules_point_at_their_upstream():
    import importlib

    from tasks.core.params import ROOT
    from tasks.core.training import paths

    for name in ORDER:
        m = importlib.import_module(f"tasks.{name}")
        assert m.STAGE == name
        up = spec(name).upstream
        for fmt in ("tis", "think_first") if spec(name).per_format else (None,):
            data, init, out = paths(name, fmt)
            assert data == ROOT / "data" / "synthesize"
            want = ROOT / "checkpoints" / up
            if up in STAGES and spec(up).per_format:
                want = want / fmt  # a format-dependent stage starts from the same format's upstream
            assert init == want and out == ROOT / "checkpoints" / name / (fmt or "")


@pytest.fixture(scope="module")
def fixed_batch(tiny, tmp_path_factory):
    """The tiny dataset with only its shortest training rows (one fixed batch), validation unchanged."""
    import shutil

    import pyarrow.parquet as pq

    out = tmp_path_factory.mktemp("fixed")
    t = pq.read_table(tiny.data / "train.parquet")
    secs = t.column("response_seconds").to_pylist()
    pq.write_table(t.take(sorted(range(t.num_rows), key=secs.__getitem__)[:FIXED]), out / "train.parquet")
    shutil.copy(tiny.data / "validation.parquet", out / "validation.parquet")
    (out / "audio").symlink_to(tiny.data / "audio")
    return out


FIXED = 2
# Steps and learning rate to overfit FIXED rows from random weights (the talker predicts ~1,000 codec
# ids per clip, so it needs more).
OVERFIT = {"talker": (40, 1e-2)}


@pytest.mark.parametrize("stage,fmt", RUNS, ids=[f"{s}@{f}" if f else s for s, f in RUNS])
def test_loss_falls_through_the_real_loop(tiny, fixed_batch, tmp_path, stage, fmt):
    from tasks.core.trainer import train

    steps, lr = OVERFIT.get(stage, (20, 5e-3))
    sp = replace(tiny.p.stage(stage), steps=steps, batch_size=FIXED, lr=lr, warmup_steps=2, max_len=2048)
    res = train(stage, tiny.p, sp, fixed_batch, tiny.init, tmp_path / "fixed", fmt=fmt or "tis",
                codec_dir=tiny.codec, measure_start=True)
    first, last = res.history[0][1], res.history[-1][1]
    assert last <= 0.7 * first, f"{stage}@{fmt}: {first:.3f} -> {last:.3f} on a fixed batch of {FIXED}"
    if stage != "talker":  # the thinker's format and vocabulary generalise even from two rows
        assert res.val_loss < res.first_val_loss, (res.first_val_loss, res.val_loss)
        return
    # The talker memorises two clips' codes; its validation loss falls on the whole (tiny) set.
    sp = replace(sp, steps=12, batch_size=4, lr=5e-3)
    res = train(stage, tiny.p, sp, tiny.data, tiny.init, tmp_path / "all", fmt=fmt, codec_dir=tiny.codec,
                measure_start=True)
    assert res.val_loss < 0.95 * res.first_val_loss, (res.first_val_loss, res.val_loss)
    # Whether it listens to the thinker: the same rows scored against another row's speech.
    assert res.val_loss_other_speech is not None and res.val_loss_other_speech != res.val_loss


def test_talker_examples_carry_where_each_token_is_said(tiny):
    """The talker stage reads each response token's end frame from the dataset's ``response_starts``
    (talker.timing: aligned), one per spoken token, ending with the clip; ``estimated`` reads none."""
    from models.codec import WorldCodec
    from models.talker import token_seconds
    from tasks.core.examples import StageData

    sp = tiny.p.stage("talker")
    assert sp.timing == "aligned" and sp.pace == "duration"
    data = StageData(tiny.data, "train", tiny.tok, tiny.p, spec("talker"), sp, "tis", codec_dir=tiny.codec)
    # the codec stage's table names each codebook's size (the talker's self_feed draws within them)
    assert data.codes.codebook_sizes == tuple(WorldCodec.load(tiny.codec).codebook_sizes)
    w = token_seconds(tiny.tok)
    for i in range(len(data)):
        e = data.example(i)
        if isinstance(e, str):
            continue
        said = [t for t, r in zip(e.input_ids, e.roles) if r == 2 and w[t] > 0]  # RESPONSE tokens that say something
        assert e.bounds is not None and len(e.bounds) == len(said) and e.bounds == sorted(e.bounds)
        assert e.bounds[-1] == len(e.codes) // data.codes.codebooks and e.bounds[0] > 0
    est = StageData(tiny.data, "train", tiny.tok, tiny.p, spec("talker"), replace(sp, timing="estimated"), "tis",
                    codec_dir=tiny.codec)
    assert all(isinstance(e, str) or e.bounds is None for e in map(est.example, range(len(est))))
