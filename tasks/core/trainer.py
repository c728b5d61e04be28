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
    roles: list[int]
    audio: str = ""  # path of the question audio (audio stages)
    codes: list[int] = field(default_factory=list)  # response speech codec ids (talker)


def make_examples(rows: list[dict], tokenizer, p: Params, spec: StageSpec, sp: StageParams,
                  fmt: str = "tis") -> tuple[list[Example], dict[str, int]]:
    """Dataset rows -> laid-out examples for this stage's target; returns (examples, dropped)."""
    from models.format import FormatError, Role, build
    from models.tokenizer import control_ids, text_prompt

    ids = control_ids(tokenizer)
    eos = ids.eos
    out, dropped = [], {"too_long": 0, "format": 0}
    for row in rows:
        prompt = text_prompt(tokenizer, row["question"])
        try:
            if spec.target == "interleaved":
                kw = {"min_block": row["min_block"], "delay_eos": True} if fmt == "tis" else {}
                lay = build(fmt, prompt, row["response_ids"], row["reasoning_ids"], ids, p.schedule, **kw)
                seq, mask, roles = lay.input_ids, lay.loss_mask, [int(r) for r in lay.roles]
            elif spec.target == "solution":
                body = list(row["reasoning_ids"]) + list(row["response_ids"]) + [eos]
                seq = prompt + body
                mask = [False] * len(prompt) + [True] * len(body)
                roles = [int(Role.PROMPT)] * len(prompt) + [int(Role.RESPONSE)] * len(body)
            else:
                raise NotImplementedError(f"target {spec.target!r} needs the audio pipeline (stage {spec.name})")
        except FormatError:
            dropped["format"] += 1
            continue
        if len(seq) > sp.max_len:
            dropped["too_long"] += 1
            continue
        labels = [t if m else IGNORE for t, m in zip(seq, mask)]
        out.append(Example(seq, labels, roles, row.get("question_audio", "")))
    return out, dropped


def collate(batch: list[Example], pad_id: int):
    import torch

    T = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), T), IGNORE, dtype=torch.long)
    attn = torch.zeros((len(batch), T), dtype=torch.long)
    roles = torch.zeros((len(batch), T), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        attn[i, :n] = 1
        roles[i, :n] = torch.tensor(e.roles)
    return {"input_ids": ids, "labels": labels, "attention_mask": attn, "roles": roles}


def n_targets(e: Example) -> int:
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


# ----------------------------------------------------------------------------- model wrapper
class StageModule:
    """Factory for the nn.Module the engine wraps: the full model, forward = this stage's loss sum."""

    @staticmethod
    def build(model, spec: StageSpec):
        import torch

        class _M(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, labels, attention_mask, roles):
                out = self.model.thinker(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
                logits = out.logits[:, :-1].float()  # (B, T-1, V)
                tgt = labels[:, 1:]
                return torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=IGNORE, reduction="sum"
                )

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


def fingerprint(p: Params, spec: StageSpec, sp: StageParams, data_dir: Path, init_ckpt: Path, fmt: str) -> str:
    """What must match for a checkpoint to be resumed (not steps: more steps continue a run)."""
    h = hashlib.sha256()
    for split in ("train.parquet", "validation.parquet"):
        f = data_dir / split
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
          fmt: str = "tis", tracker=None, stop_after: int | None = None) -> TrainResult:
    """Train ``stage``; resumes from the newest matching checkpoint in ``out_dir``.

    ``stop_after``: leave after that many optimizer steps in this call (tests simulate a kill).
    """
    import deepspeed
    import torch
    import torch.distributed as dist
    from transformers import Qwen2_5OmniForConditionalGeneration

    from models.modules import set_trainable
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
    fp = fingerprint(p, spec, sp, data_dir, init_ckpt, fmt)

    # Resume only a checkpoint made from the same data, upstream and settings.
    if rank == 0:
        for d in ck.remove_partial(out_dir):
            log.warning("removed partial checkpoint %s left by an interrupted run", d.name)
    resume = None
    dirs = ck.step_dirs(out_dir)
    if dirs:
        state = ck.read_state(dirs[-1][1])
        if state.get("fingerprint") == fp:
            resume = dirs[-1][1]
        else:
            log.warning("%s: checkpoints in %s come from other params/data; starting from %s",
                        stage, out_dir, init_ckpt)
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

    rows = load_samples(data_dir, "train")
    examples, dropped = make_examples(rows, tok, p, spec, sp, fmt)
    val_examples, _ = make_examples(load_samples(data_dir, "validation"), tok, p, spec, sp, fmt)
    if not examples:
        raise ValueError(f"{stage}: no training examples left in {data_dir} (dropped: {dropped}); "
                         f"raise {stage}.max_len or check the data stage")
    if any(dropped.values()) and rank == 0:
        log.warning("%s: dropped %s of %d samples", stage, dropped, len(rows))

    phase = spec.phase_at(0, sp.steps)
    set_trainable(model, set().union(*(ph.trainable for ph in spec.phases)))
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

    def apply_phase(step: int) -> None:
        nonlocal phase
        ph = spec.phase_at(step, sp.steps)
        for name, q in module.model.named_parameters():
            from models.modules import group_of

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
                {"stage": stage, "format": fmt, "step": at, "fingerprint": fp, "history": history, "world": world}, indent=1))
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
    if not ck.step_dirs(out_dir) or ck.step_dirs(out_dir)[-1][0] < step:
        save_ckpt(step)

    val_loss = evaluate(engine, val_examples, pad_id, micro, rank, world) if step == sp.steps else None
    el = time.time() - t_start
    res = TrainResult(stage, step, start, last_loss, val_loss, tokens_seen * world / max(el, 1e-9),
                      ck.latest(out_dir), history, resumed=resume is not None)
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
