"""One training loop for every stage: DeepSpeed engine, stage table, atomic checkpoints, resume.

``train(stage, params, data_dir, init_dir, out_dir)`` reads the stage's row of the table
(tasks/core/stages.py), freezes all but its 🔥 modules, and trains with a DeepSpeed engine whose
config is built here from params.yaml. One process on CPU (gloo) or several ranks under the
``deepspeed`` launcher; the global batch (``batch_size``) is the same for any number of ranks,
each rank taking every ``world``-th sample of it, and the loss is normalised by the global number
of target tokens, so 1 and N ranks compute the same update.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasks.core import checkpoint as ck
from tasks.core.params import Params, StageParams
from tasks.core.stages import StageSpec

log = logging.getLogger("trainer")
IGNORE = -100


# ----------------------------------------------------------------------------- distributed setup
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> tuple[int, int]:
    """Join the launcher's process group, or make a one-process group; returns (rank, world)."""
    import deepspeed
    import torch

    if "RANK" not in os.environ:  # not under a launcher: a single local rank
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def ds_config(p: Params, sp: StageParams, micro_batch: int, world: int) -> dict[str, Any]:
    """The DeepSpeed config, built from params.yaml (no parallel JSON file)."""
    import torch

    t = p.trainer
    bf16 = t.precision == "bf16" or (t.precision == "auto" and torch.cuda.is_available())
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": t.grad_accum,
        "train_batch_size": micro_batch * t.grad_accum * world,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": {"stage": t.zero_stage},
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        # ZeRO with a client (torch) optimizer on CPU: DeepSpeed's fused CPU Adam would compile for
        # minutes on first use.
        "zero_allow_untested_optimizer": True,
    }


# ----------------------------------------------------------------------------- data
@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE where the loss mask is off
    roles: list[int]  # models.format.Role per position
    features: Any = None  # (128, L) log-mel of the spoken question when the prompt is audio
    codes: list[int] | None = None  # flat codec ids of the response speech (talker targets)


_FEATURES: dict[tuple[str, float], Any] = {}  # (path, mtime) -> (128, L) log-mel; computed once per process


def question_features(path: Path):
    """Log-mel ``(128, L)`` of one audio file, cached for the life of the process."""
    import soundfile as sf

    from models.audio import log_mel

    key = (str(path), path.stat().st_mtime)
    if key not in _FEATURES:
        wave, sr = sf.read(str(path), dtype="float32", always_2d=False)
        _FEATURES[key] = log_mel(wave, sr)[0]
    return _FEATURES[key]


def _audio_path(data_dir: Path, row: dict, col: str) -> Path:
    rel = row.get(col) or ""
    if not rel:
        raise ValueError(f"sample {row.get('id', '?')} has no {col}; this stage needs a dataset with audio "
                         f"(data/synthesize), not {data_dir}")
    return data_dir / rel


def audio_mask(rows: list[dict], input: str, text_fraction: float, seed: int) -> list[bool]:
    """Which samples get an audio prompt: all (``audio``), none (``text``) or a seeded
    ``1 - text_fraction`` share (``mixed``; the same samples in every epoch and on every rank)."""
    if input == "mixed":
        rng = random.Random(seed * 7_919 + 17)
        return [rng.random() >= text_fraction for _ in rows]
    return [input == "audio"] * len(rows)


def _body(layout: str, row: dict, prompt: list[int], tok, ids, p: Params, fmt: str):
    """The thinker sequence after ``prompt`` for a target layout -> (seq, loss mask, roles)."""
    from models.format import Role, build
    from models.tokenizer import encode

    if layout == "interleaved":
        kw = {"min_block": row["min_block"], "delay_eos": True} if fmt == "tis" else {}
        lay = build(fmt, prompt, row["response_ids"], row["reasoning_ids"], ids, p.schedule, **kw)
        return lay.input_ids, lay.loss_mask, [int(r) for r in lay.roles]
    if layout == "solution":
        body = list(row["reasoning_ids"]) + list(row["response_ids"]) + [ids.eos]
    else:  # transcript: what was said, as text
        body = encode(tok, row["spoken_question"] or row["question"]) + [ids.eos]
    seq = prompt + body
    return seq, [False] * len(prompt) + [True] * len(body), [int(Role.PROMPT)] * len(prompt) + [int(Role.RESPONSE)] * len(body)


def make_examples(rows: list[dict], tokenizer, p: Params, spec: StageSpec, sp: StageParams,
                  fmt: str = "tis", data_dir: Path | None = None,
                  codes: list[list[int]] | None = None) -> tuple[list[Example], dict[str, int]]:
    """Dataset rows -> laid-out examples for this stage's input and target; returns (examples, dropped).

    ``codes``: per row, the flat codec ids of its response speech (targets whose loss is the talker's).
    """
    from models.audio import audio_prompt, n_audio_tokens
    from models.format import FormatError
    from models.tokenizer import control_ids, text_prompt

    ids = control_ids(tokenizer)
    use_audio = audio_mask(rows, spec.input, sp.text_fraction, p.seed)
    out, dropped = [], {"too_long": 0, "format": 0}
    for row, audio, c in zip(rows, use_audio, codes or [None] * len(rows)):
        feats = None
        if audio:
            feats = question_features(_audio_path(Path(data_dir or "."), row, "question_audio"))
            prompt = audio_prompt(tokenizer, n_audio_tokens(feats.shape[1]))
        else:
            prompt = text_prompt(tokenizer, row["question"])
        try:
            seq, mask, roles = _body(spec.t.layout, row, prompt, tokenizer, ids, p, fmt)
        except FormatError:
            dropped["format"] += 1
            continue
        if len(seq) > sp.max_len:
            dropped["too_long"] += 1
            continue
        labels = [t if m else IGNORE for t, m in zip(seq, mask)]
        out.append(Example(seq, labels, roles, feats, c))
    return out, dropped


def speech_codes(rows: list[dict], data_dir: Path, codec_dir: Path) -> list[list[int]]:
    """Flat codec ids of each row's response audio: from the codec stage's ``codes.parquet`` when it
    encoded this audio, otherwise encoded here."""
    import pyarrow.parquet as pq
    import soundfile as sf

    from tasks.codec import load_stage_codec

    table = codec_dir / "codes.parquet"
    known = {}
    if table.exists():
        t = pq.read_table(table).to_pydict()
        known = dict(zip(t["response_audio"], t["codes"]))
    codec = None
    out = []
    for row in rows:
        path = _audio_path(data_dir, row, "response_audio")
        if row["response_audio"] not in known:
            codec = codec or load_stage_codec(codec_dir)
            wave, sr = sf.read(str(path), dtype="float32", always_2d=False)
            known[row["response_audio"]] = codec.flatten(codec.encode(wave, sr))
        out.append([int(x) for x in known[row["response_audio"]]])
    return out


def collate(batch: list[Example], pad_id: int) -> dict:
    """Right-padded batch; audio features only for the samples with an audio prompt (in batch order,
    as the thinker fills its ``<|AUDIO|>`` placeholders), codec ids padded with IGNORE."""
    import torch

    from models.audio import collate_features
    from models.talker import ROLE_PAD

    T = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), T), IGNORE, dtype=torch.long)
    attn = torch.zeros((len(batch), T), dtype=torch.long)
    roles = torch.full((len(batch), T), ROLE_PAD, dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        attn[i, :n] = 1
        roles[i, :n] = torch.tensor(e.roles)
    out = {"input_ids": ids, "labels": labels, "attention_mask": attn, "roles": roles}
    feats = [e.features for e in batch if e.features is not None]
    if feats:
        out.update(collate_features(feats))
    if any(e.codes is not None for e in batch):
        n = max(len(e.codes) for e in batch)
        codes = torch.full((len(batch), n), IGNORE, dtype=torch.long)
        for i, e in enumerate(batch):
            codes[i, : len(e.codes)] = torch.tensor(e.codes)
        out["codes"] = codes
    return out


def n_targets(e: Example) -> int:
    if e.codes is not None:
        return len(e.codes) + 1  # codec ids, then the codec eos
    # Labels are shifted by one: position 0 is never a target.
    return sum(1 for x in e.labels[1:] if x != IGNORE)


def global_batch(step: int, batch_size: int, n: int, seed: int) -> list[int]:
    """Sample indices of optimizer step ``step``: epochs are seeded permutations, read in order."""
    out = []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(k, n)
        perm = list(range(n))
        random.Random(seed * 1_000_003 + epoch).shuffle(perm)
        out.append(perm[i])
    return out


# ----------------------------------------------------------------------------- losses (summed over targets)
def _audio_kwargs(batch: dict) -> dict:
    return {k: batch[k] for k in ("input_features", "feature_attention_mask") if batch.get(k) is not None}


def thinker_loss_sum(model, batch: dict):
    """Summed next-token cross-entropy of the thinker over the labelled positions."""
    import torch

    out = model.thinker(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        use_cache=False, **_audio_kwargs(batch))
    logits = out.logits[:, :-1].float()  # (B, T-1, V)
    tgt = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                             ignore_index=IGNORE, reduction="sum")


def talker_loss_sum(model, batch: dict):
    """Summed talker cross-entropy on the response speech codes, given the (frozen) thinker's states."""
    import torch

    from models.talker import build_talker_inputs, talker_forward, thinker_states

    hidden, embeds = thinker_states(model, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    **_audio_kwargs(batch))
    codes = [[int(x) for x in row if x != IGNORE] for row in batch["codes"].tolist()]
    inputs = build_talker_inputs(model, hidden, embeds, batch["roles"], codes)
    logits = talker_forward(model, inputs)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                             inputs.labels.reshape(-1), ignore_index=IGNORE, reduction="sum")


LOSSES = {"thinker": thinker_loss_sum, "talker": talker_loss_sum}


# ----------------------------------------------------------------------------- model wrapper
class StageModule:
    """Factory for the nn.Module the engine wraps: the full model, forward = this stage's loss sum."""

    @staticmethod
    def build(model, spec: StageSpec):
        import torch

        loss = LOSSES[spec.t.loss]

        class _M(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, **batch):
                return loss(self.model, batch)

        return _M()


# ----------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    stage: str
    steps: int
    start_step: int
    final_loss: float
    val_loss: float | None
    tokens_per_s: float
    checkpoint: Path
    history: list[tuple[int, float]] = field(default_factory=list)
    resumed: bool = False
    seconds: float = 0.0  # wall time of the training loop in this call


def fingerprint(p: Params, spec: StageSpec, sp: StageParams, data_dir: Path, init_ckpt: Path, fmt: str,
                codec_dir: Path | None = None) -> str:
    """What must match for a checkpoint to be resumed (not steps: more steps continue a run)."""
    h = hashlib.sha256()
    files = [data_dir / "train.parquet", data_dir / "validation.parquet"]
    if spec.t.codec and codec_dir is not None:
        files += [codec_dir / "codec.json", codec_dir / "codes.parquet"]
    for f in files:
        h.update(f.read_bytes() if f.exists() else b"-")
    trainer = {k: v for k, v in asdict(p.trainer).items() if k not in ("log_every", "checkpoint_every", "keep_checkpoints")}
    stage = {k: v for k, v in asdict(sp).items() if k != "steps"}
    upstream = ck.read_state(init_ckpt)
    h.update(json.dumps({"spec": spec.name, "format": fmt, "stage": stage, "trainer": trainer, "schedule": asdict(p.schedule),
                         "seed": p.seed, "upstream": [str(init_ckpt.name), upstream.get("fingerprint"),
                                                      upstream.get("step"), upstream.get("source")]},
                        sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _rng_state() -> dict:
    import numpy as np
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _lr_lambda(sp: StageParams):
    def f(step: int) -> float:
        if step < sp.warmup_steps:
            return (step + 1) / (sp.warmup_steps + 1)
        frac = (step - sp.warmup_steps) / max(1, sp.steps - sp.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    return f


def train(stage: str, p: Params, sp: StageParams, data_dir: Path, init_dir: Path, out_dir: Path,
          fmt: str = "tis", tracker=None, stop_after: int | None = None,
          codec_dir: Path | None = None) -> TrainResult:
    """Train ``stage``; resumes from the newest matching checkpoint in ``out_dir``.

    ``stop_after``: leave after that many optimizer steps in this call (tests simulate a kill).
    ``codec_dir``: the codec stage's output, for targets scored by the talker (default
    ``checkpoints/codec``).
    """
    import deepspeed
    import torch
    import torch.distributed as dist
    from transformers import Qwen2_5OmniForConditionalGeneration

    from models.modules import group_of, set_trainable
    from models.omni import save
    from models.tokenizer import load_tokenizer
    from tasks.core.dataset import load_samples
    from tasks.core.stages import spec as get_spec

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    spec = get_spec(stage)
    rank, world = init_distributed()
    t = p.trainer
    if sp.batch_size % (world * t.grad_accum):
        raise ValueError(
            f"{stage}.batch_size={sp.batch_size} must be divisible by ranks ({world}) x trainer.grad_accum "
            f"({t.grad_accum}); change one of them in params.yaml"
        )
    micro = sp.batch_size // (world * t.grad_accum)
    init_ckpt = ck.latest(init_dir)
    if spec.t.codec:
        from tasks.core.params import ROOT

        codec_dir = Path(codec_dir or ROOT / "checkpoints" / "codec")
    fp = fingerprint(p, spec, sp, data_dir, init_ckpt, fmt, codec_dir)

    # Resume only a checkpoint made from the same data, upstream and settings.
    if rank == 0:
        for d in ck.remove_partial(out_dir):
            log.warning("removed partial checkpoint %s left by an interrupted run", d.name)
    resume = None
    dirs = ck.step_dirs(out_dir)
    if dirs:
        state = ck.read_state(dirs[-1][1])
        # More steps continue a run; fewer than already trained cannot be resumed (a model can't be
        # un-trained), so that run starts over like one with other params.
        if state.get("fingerprint") == fp and state.get("step", 0) <= sp.steps:
            resume = dirs[-1][1]
        else:
            why = "other params/data" if state.get("fingerprint") != fp else f"more than {sp.steps} steps"
            log.warning("%s: checkpoints in %s come from %s; starting from %s", stage, out_dir, why, init_ckpt)
            if rank == 0:
                for _, d in dirs:
                    shutil.rmtree(d, ignore_errors=True)
    dist.barrier()
    src = resume or init_ckpt
    from models.omni import _quiet_transformers

    _quiet_transformers()
    model = Qwen2_5OmniForConditionalGeneration.from_pretrained(str(src / "model"), dtype=torch.float32)
    spk = src / "model" / "spk_dict.pt"
    if spk.exists():
        model.load_speakers(str(spk))
    tok = load_tokenizer(src / "tokenizer")
    pad_id = tok.pad_token_id

    t_data = time.time()
    rows = load_samples(data_dir, "train")
    val_rows = load_samples(data_dir, "validation")
    codes = (speech_codes(rows, data_dir, codec_dir), speech_codes(val_rows, data_dir, codec_dir)) \
        if spec.t.codec else (None, None)
    examples, dropped = make_examples(rows, tok, p, spec, sp, fmt, data_dir, codes[0])
    val_examples, _ = make_examples(val_rows, tok, p, spec, sp, fmt, data_dir, codes[1])
    if rank == 0:
        log.info("%s: %d train / %d validation examples (%s input, %s target) ready in %.1fs", stage,
                 len(examples), len(val_examples), spec.input, spec.target, time.time() - t_data)
    if not examples:
        raise ValueError(f"{stage}: no training examples left in {data_dir} (dropped: {dropped}); "
                         f"raise {stage}.max_len or check the data stage")
    if any(dropped.values()) and rank == 0:
        log.warning("%s: dropped %s of %d samples", stage, dropped, len(rows))

    phase = spec.phase_at(0, sp.steps)
    set_trainable(model, spec.trainable)
    module = StageModule.build(model, spec)
    trainable = [q for q in module.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=sp.lr, weight_decay=sp.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(sp))
    engine, opt, _, sched = deepspeed.initialize(model=module, optimizer=opt, lr_scheduler=sched,
                                                 config=ds_config(p, sp, micro, world))
    start = 0
    history: list[tuple[int, float]] = []
    if resume is not None:
        engine.load_checkpoint(str(resume / "ds"), tag="state", load_module_strict=False)
        state = ck.read_state(resume)
        start = state["step"]
        history = [tuple(x) for x in state.get("history", [])]
        rng = resume / f"rng-rank{rank}.pt"
        if rng.exists():
            _set_rng(torch.load(rng, weights_only=False))
        log.info("%s: resumed from %s at step %d", stage, resume.name, start)
    else:
        torch.manual_seed(p.seed + rank)

    applied = None  # the phase whose trainable set is in force; switch only when it changes

    def apply_phase(step: int) -> None:
        nonlocal phase, applied
        ph = spec.phase_at(step, sp.steps)
        if ph is applied:
            return
        applied = ph
        for name, q in module.model.named_parameters():
            if q in trainable_set:
                q.requires_grad_(group_of(name) in ph.trainable)
        if ph != phase and rank == 0:
            log.info("%s: phase %s -> %s at step %d", stage, phase.name, ph.name, step)
        phase = ph

    trainable_set = set(trainable)
    device = engine.device
    step = start
    tokens_seen, t_start, last_loss = 0, time.time(), float("nan")
    done_this_call = 0

    def save_ckpt(at: int) -> Path:
        name = ck.step_name(at)
        tmp = out_dir / f".{name}.tmp"
        if rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        dist.barrier()
        engine.save_checkpoint(str(tmp / "ds"), tag="state")
        torch.save(_rng_state(), tmp / f"rng-rank{rank}.pt")
        if t.zero_stage == 3:
            with deepspeed.zero.GatheredParameters(list(module.model.parameters()), modifier_rank=None):
                if rank == 0:
                    save(module.model, tmp / "model")
        elif rank == 0:
            save(module.model, tmp / "model")
        if rank == 0:
            tok.save_pretrained(str(tmp / "tokenizer"))
            (tmp / "trainer_state.json").write_text(json.dumps(
                {"stage": stage, "format": fmt, "step": at, "fingerprint": fp, "world": world,
                 "config": {"stage": asdict(sp), "trainer": asdict(t), "schedule": asdict(p.schedule),
                            "seed": p.seed, "data": str(data_dir), "init": str(init_ckpt)},
                 "history": history}, indent=1, default=str))
        dist.barrier()
        if rank == 0:
            os.replace(tmp, out_dir / name)
            ck.prune(out_dir, t.keep_checkpoints)
        dist.barrier()
        return out_dir / name

    engine.train()
    while step < sp.steps:
        if len(spec.phases) > 1:
            apply_phase(step)
        idx = global_batch(step, sp.batch_size, len(examples), p.seed)
        total = max(1, sum(n_targets(examples[i]) for i in idx))
        mine = idx[rank::world]
        loss_sum = torch.zeros((), device=device)
        for a in range(t.grad_accum):
            mb = [examples[i] for i in mine[a * micro:(a + 1) * micro]]
            batch = {k: v.to(device) for k, v in collate(mb, pad_id).items()}
            s = engine(**batch)
            # DeepSpeed averages gradients over ranks and divides by grad_accum: undo both so the
            # update is sum(loss) / global target tokens, whatever the number of ranks.
            engine.backward(s * (world * t.grad_accum) / total)
            engine.step()
            loss_sum += s.detach()
            tokens_seen += int(batch["attention_mask"].sum())
        dist.all_reduce(loss_sum)
        last_loss = loss_sum.item() / total
        step += 1
        done_this_call += 1
        history.append((step, round(last_loss, 5)))
        if rank == 0 and (step % t.log_every == 0 or step == sp.steps or step == start + 1):
            el = time.time() - t_start
            tps = tokens_seen * world / max(el, 1e-9)
            lr = sched.get_last_lr()[0] if sched is not None else sp.lr
            eta = (sp.steps - step) * el / max(1, done_this_call)
            log.info("%s step %d/%d loss %.4f lr %.2e %.0f tok/s eta %.0fs", stage, step, sp.steps,
                     last_loss, lr, tps, eta)
            if tracker:
                tracker.metrics({"train/loss": last_loss, "train/lr": lr, "train/tokens_per_s": tps}, step=step)
        if step % t.checkpoint_every == 0 or step == sp.steps:
            save_ckpt(step)
        if stop_after is not None and done_this_call >= stop_after:
            break
    loop_s = time.time() - t_start
    if not ck.step_dirs(out_dir) or ck.step_dirs(out_dir)[-1][0] < step:
        save_ckpt(step)

    val_loss = evaluate(engine, val_examples, pad_id, micro, rank, world) if step == sp.steps else None
    # Throughput of the training loop itself (checkpoints inside it included; final save and eval not).
    res = TrainResult(stage, step, start, last_loss, val_loss, tokens_seen * world / max(loop_s, 1e-9),
                      ck.latest(out_dir), history, resumed=resume is not None, seconds=loop_s)
    return res


def evaluate(engine, examples: list[Example], pad_id: int, micro: int, rank: int, world: int) -> float | None:
    """Mean target-token loss over the validation examples (all ranks)."""
    import torch
    import torch.distributed as dist

    if not examples:
        return None
    engine.eval()
    tot = torch.zeros(2, device=engine.device)
    with torch.no_grad():
        mine = examples[rank::world]
        for i in range(0, len(mine), micro):
            mb = mine[i:i + micro]
            batch = {k: v.to(engine.device) for k, v in collate(mb, pad_id).items()}
            tot[0] += engine(**batch).float()
            tot[1] += sum(n_targets(e) for e in mb)
    dist.all_reduce(tot)
    engine.train()
    return (tot[0] / tot[1].clamp(min=1)).item()
