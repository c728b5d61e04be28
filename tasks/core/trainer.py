"""One training loop for every stage: setup, resume, steps, save.

``train(stage, p, sp, data_dir, init_dir, out_dir)`` reads the stage's row of the table
(tasks/core/stages.py), freezes all but its 🔥 modules, and trains with a DeepSpeed engine whose
config is built from params.yaml (tasks/core/distributed.py). Data comes lazily from the parquet
dataset (tasks/core/examples.py), losses from the model side (models/losses.py), checkpoints through
tasks/core/checkpoint.py. One process on CPU (gloo) or several ranks under the ``deepspeed`` launcher;
the global batch (``batch_size``) is the same for any number of ranks, each rank taking every
``world``-th sample of it, and the loss is normalised by the global number of target tokens, so 1 and
N ranks compute the same update.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tasks.core import checkpoint as ck
from tasks.core.params import Params, StageParams

log = logging.getLogger("trainer")


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
    first_val_loss: float | None = None  # validation loss of the starting weights (when measured)
    # talker: validation loss of each row's thinker states against another row's speech (``evaluate``)
    val_loss_other_speech: float | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    grad_norms: list[float] = field(default_factory=list)  # global gradient norm (before clipping) per step in this call
    probes: list[tuple[int, dict]] = field(default_factory=list)  # (step, held-out probe metrics), whole run


def lr_lambda(sp: StageParams):
    """Linear warmup, then cosine decay to 10 % of ``lr``."""
    def f(step: int) -> float:
        if step < sp.warmup_steps:
            return (step + 1) / (sp.warmup_steps + 1)
        frac = (step - sp.warmup_steps) / max(1, sp.steps - sp.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    return f


class StageModule:
    """Factory for the nn.Module the engine wraps: the full model, forward = this stage's loss sum."""

    @staticmethod
    def build(model, loss_name: str, *, ranks: int = 1, **loss_kwargs):
        import torch

        from models.losses import LOSSES
        from models.modules import group_of

        loss = LOSSES[loss_name]
        # The audio tower's parameters (audio_encoder, adapter) only meet a micro-batch with spoken
        # prompts. On a text-only one they would get no gradient at all, and a rank whose micro-batch is
        # all text would then reduce fewer gradients than a rank with speech (ZeRO-1 skips params
        # without a grad: mismatched all-reduce buckets, gloo aborts). A zero-weighted sum of them gives
        # every trainable one a zero gradient instead, which is what DeepSpeed's reduction treats a missing
        # one as anyway. One rank reduces with nobody: it skips the term (and reading those weights).
        heard = [] if ranks == 1 else [q for n, q in model.named_parameters()
                                       if group_of(n) in ("audio_encoder", "adapter")]

        class _M(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, **batch):
                out = loss(self.model, batch, **loss_kwargs)
                if heard and batch.get("input_features") is None:
                    live = [q for q in heard if q.requires_grad]
                    if live:
                        out = out + 0.0 * sum(q.sum() for q in live)
                return out

        return _M()


def _set_talker_pace(model, tok, kind: str, train_data, stage: str, rank: int, numbers: bool = False,
                     learn: bool = False) -> None:
    """The talker's pace (models/talker.py PACES), saved with its checkpoints; the duration pace's
    frames per estimated second measured on this stage's training speech, with the same estimate the
    stream uses (``numbers``: a number's tokens share the time of its words; ``learn``: token seconds
    measured on this stage's aligned training speech, ``models.talker.learn_seconds``)."""
    from models.talker import learn_seconds, set_pace, token_seconds, token_texts
    from tasks.core.examples import aligned_responses, speech_pace

    learned = None
    if kind == "duration" and learn:
        learned = learn_seconds(aligned_responses(train_data), token_texts(tok), token_seconds(tok))
        if rank == 0:
            log.info("%s: token seconds learned on %d aligned responses (%d tokens, %d ids; measured / estimated "
                     "%.3f, numbers %.3f)", stage, learned["responses"], learned["tokens"], len(learned["seconds"]),
                     learned["ratio"], learned["number_scale"])
    pace = set_pace(model, tok, kind, None if kind != "duration" else 1.0, numbers, learned)
    if kind == "duration":
        fps, rows = speech_pace(train_data, pace.durations)
        if rank == 0:
            log.info("%s: duration pace, %.1f codec frames per %s second of speech (%d responses; numbers "
                     "said as %s)", stage, fps, "learned" if learned else "estimated", rows,
                     "words" if numbers else "digits")
        set_pace(model, tok, kind, fps, numbers, learned)


def _resume_point(out_dir: Path, fp: str, steps: int, rank: int, stage: str, init_ckpt: Path) -> Path | None:
    """The newest checkpoint made from the same data, upstream and settings, else None (others deleted)."""
    import shutil

    if rank == 0:
        for d in ck.remove_partial(out_dir):
            log.warning("removed partial checkpoint %s left by an interrupted run", d.name)
    dirs = ck.step_dirs(out_dir)
    if not dirs:
        return None
    state = ck.read_state(dirs[-1][1])
    # More steps continue a run; fewer than already trained cannot be resumed (a model can't be
    # un-trained), so that run starts over like one with other params.
    if state.get("fingerprint") == fp and state.get("step", 0) <= steps:
        return dirs[-1][1]
    why = "other params/data" if state.get("fingerprint") != fp else f"more than {steps} steps"
    log.warning("%s: checkpoints in %s come from %s; starting from %s", stage, out_dir, why, init_ckpt)
    if rank == 0:
        for _, d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    return None


def train(stage: str, p: Params, sp: StageParams, data_dir: Path, init_dir: Path, out_dir: Path,
          fmt: str = "tis", tracker=None, stop_after: int | None = None,
          codec_dir: Path | None = None, measure_start: bool = False) -> TrainResult:
    """Train ``stage``; resumes from the newest matching checkpoint in ``out_dir``.

    ``stop_after``: leave after that many optimizer steps in this call (tests simulate a stop).
    ``codec_dir``: the codec stage's output, for targets scored by the talker (default
    ``checkpoints/codec``). ``measure_start``: also report the validation loss before training.
    """
    import deepspeed
    import torch
    import torch.distributed as dist

    from models.modules import group_of, set_trainable
    from models.omni import load_checkpoint
    from tasks.core.distributed import ds_config, init_distributed
    from tasks.core.examples import BatchStream, StageData, collate
    from tasks.core.params import ROOT
    from tasks.core.stages import for_params

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    spec = for_params(stage, p)
    rank, world = init_distributed()
    t = p.trainer
    if sp.batch_size % (world * t.grad_accum):
        raise ValueError(
            f"{stage}.batch_size={sp.batch_size} must be divisible by ranks ({world}) x trainer.grad_accum "
            f"({t.grad_accum}); change one of them in params.yaml"
        )
    if world > 1 and t.zero_stage >= 2 and spec.mixes(getattr(sp, "text_fraction", 0.0)):
        # ZeRO-2/3 reduce gradients during backward, in the order the hooks fire; a text-only
        # micro-batch on one rank and a spoken one on another fire the adapter's hooks at different
        # times (or not at all), so ranks would sum mismatched buckets (measured: wrong updates).
        raise ValueError(f"{stage} mixes text and spoken prompts, which ZeRO stage {t.zero_stage} cannot reduce "
                         f"correctly over {world} ranks; use trainer.zero_stage 0 or 1 for this stage (or run it on "
                         "one rank)")
    micro = sp.batch_size // (world * t.grad_accum)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    init_ckpt = ck.latest(init_dir)
    if spec.t.codec:
        codec_dir = Path(codec_dir or ROOT / "checkpoints" / "codec")
    fp = ck.fingerprint(p, spec, sp, data_dir, init_ckpt, fmt, codec_dir)
    resume = _resume_point(out_dir, fp, sp.steps, rank, stage, init_ckpt)
    dist.barrier()

    # --- setup: model, data, engine
    src = resume or init_ckpt
    model, tok = load_checkpoint(src, torch.float32)
    pad_id = tok.pad_token_id
    train_data = StageData(data_dir, "train", tok, p, spec, sp, fmt, codec_dir)
    val_data = StageData(data_dir, "validation", tok, p, spec, sp, fmt, codec_dir)
    if rank == 0:
        log.info("%s: %d train / %d validation rows (%s input, %s target), read lazily", stage, len(train_data),
                 len(val_data), spec.input, spec.target)

    if spec.t.codec and resume is None:
        _set_talker_pace(model, tok, getattr(sp, "pace", "position"), train_data, stage, rank,
                         getattr(sp, "numbers", "digits") == "words", getattr(sp, "seconds", "estimate") == "learned")
        from models.talker import set_previous

        set_previous(model, getattr(sp, "previous", "codes"))
    elif spec.t.codec:
        from models.talker import attach_pace

        attach_pace(model, tok)  # a resumed talker keeps the pace its checkpoint names

    phase = spec.phase_at(0, sp.steps)
    set_trainable(model, spec.trainable)
    state_cache = None
    if train_data.codes and t.state_cache_mb:
        from models.talker import ThinkerStateCache

        state_cache = ThinkerStateCache(t.state_cache_mb)
    module = StageModule.build(model, spec.t.loss, ranks=world,
                               **({"codebooks": train_data.codes.codebooks, "prev_dropout": getattr(sp, "prev_dropout", 0.0),
                                   "self_feed": getattr(sp, "self_feed", 0.0),
                                   "codebook_sizes": train_data.codes.codebook_sizes, "state_cache": state_cache}
                                  if train_data.codes else {}))
    trainable = [q for q in module.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=sp.lr, weight_decay=sp.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(sp))
    engine, opt, _, sched = deepspeed.initialize(model=module, optimizer=opt, lr_scheduler=sched,
                                                 config=ds_config(t, micro, world))

    # --- resume
    start, cursor, group_batch, history, state = 0, 0, 0, [], {}
    if resume is not None:
        state = ck.load(resume, engine, rank)
        start, cursor, group_batch = state["step"], state.get("cursor", 0), state.get("group_batch", 0)
        history = [tuple(x) for x in state.get("history", [])]
        log.info("%s: resumed from %s at step %d", stage, resume.name, start)
    else:
        torch.manual_seed(p.seed + rank)
    stream = BatchStream(train_data, sp.batch_size, p.seed, cursor, length_group=t.length_group,
                         group_batch=group_batch)
    first_val = evaluate(engine, val_data, pad_id, micro, rank, world) if measure_start and start == 0 else None
    probe_every = getattr(sp, "probe_every", 0)
    probe = None
    if probe_every and getattr(sp, "probe_problems", 0) and rank == 0 and spec.t.loss == "thinker" and t.zero_stage < 3:
        from tasks.core.probe import Probe

        probe = Probe(val_data, fmt, sp.probe_problems, max_new_tokens=sp.max_len)
    probes = [(int(s), dict(m)) for s, m in (state.get("probes", []) if resume is not None else [])]

    def run_probe(at: int) -> None:
        if probe is None or not len(probe) or (probes and probes[-1][0] == at):
            return
        m = probe(module.model, tok)
        probes.append((at, m))
        if tracker:
            tracker.metrics(m, step=at)

    trainable_set = set(trainable)
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

    def save(at: int) -> Path:
        state = {"stage": stage, "format": fmt, "fingerprint": fp, "world": world, "cursor": stream.cursor,
                 "group_batch": stream.group_batch,
                 "config": {"stage": asdict(sp), "trainer": asdict(t), "schedule": asdict(p.schedule),
                            "seed": p.seed, "data": str(data_dir), "init": str(init_ckpt)},
                 "history": history, "probes": probes}
        return ck.save(out_dir, at, engine, module.model, tok, state, rank, t.zero_stage, t.keep_checkpoints)

    # --- steps
    device = engine.device
    step, done_this_call, grad_norms = start, 0, []
    tokens_seen, t_start, last_loss = 0, time.time(), float("nan")
    engine.train()
    from tasks.core.cpu import CpuShare

    share = CpuShare()  # the cores the flow lends this stage while others run beside it (none: untouched)
    while step < sp.steps:
        share.apply()
        if len(spec.phases) > 1:
            apply_phase(step)
        batch = stream.next_batch()
        total = max(1, sum(e.n_targets for e in batch))
        mine = train_data.load_features(batch[rank::world])
        loss_sum = torch.zeros((), device=device)
        for a in range(t.grad_accum):
            tensors = {k: v.to(device) for k, v in collate(mine[a * micro:(a + 1) * micro], pad_id).items()}
            s = engine(**tensors)
            # DeepSpeed averages gradients over ranks and divides by grad_accum: undo both so the
            # update is sum(loss) / global target tokens, whatever the number of ranks.
            engine.backward(s * (world * t.grad_accum) / total)
            engine.step()
            loss_sum += s.detach()
            tokens_seen += int(tensors["attention_mask"].sum())
        dist.all_reduce(loss_sum)
        last_loss = loss_sum.item() / total
        gn = engine.get_global_grad_norm()
        grad_norms.append(float(gn) if gn is not None else float("nan"))
        step += 1
        done_this_call += 1
        history.append((step, round(last_loss, 6)))
        if rank == 0 and (step % t.log_every == 0 or step == sp.steps or step == start + 1):
            el = time.time() - t_start
            tps = tokens_seen * world / max(el, 1e-9)
            lr = sched.get_last_lr()[0] if sched is not None else sp.lr
            eta = (sp.steps - step) * el / max(1, done_this_call)
            log.info("%s step %d/%d loss %.4f lr %.2e %.0f tok/s eta %.0fs", stage, step, sp.steps, last_loss, lr,
                     tps, eta)
            if tracker:
                tracker.metrics({"train/loss": last_loss, "train/lr": lr, "train/tokens_per_s": tps,
                                 "train/grad_norm": grad_norms[-1]}, step=step)
        if probe_every and (step % probe_every == 0 or step == sp.steps):
            run_probe(step)
        if step % t.checkpoint_every == 0 or step == sp.steps:
            save(step)
        if stop_after is not None and done_this_call >= stop_after:
            break
    loop_s = time.time() - t_start
    if not ck.step_dirs(out_dir) or ck.step_dirs(out_dir)[-1][0] < step:
        save(step)
    if stream.dropped and rank == 0:
        log.warning("%s: skipped rows that do not fit: %s", stage, dict(stream.dropped))
    if state_cache is not None and rank == 0:
        log.info("%s: the frozen thinker's states of %d rows kept (%.0f MB): %d batches read them, %d ran it", stage,
                 len(state_cache.rows), state_cache.bytes / 2**20, state_cache.hits, state_cache.misses)

    val_loss = evaluate(engine, val_data, pad_id, micro, rank, world) if step == sp.steps else None
    val_other = None
    if spec.t.codec and step == sp.steps:  # does the talker listen to the thinker? (its speech vs another's)
        val_other = evaluate(engine, val_data, pad_id, micro, rank, world, other_speech=True)
    # Throughput of the training loop itself (checkpoints inside it included; final save and eval not).
    return TrainResult(stage, step, start, last_loss, val_loss, tokens_seen * world / max(loop_s, 1e-9),
                       ck.latest(out_dir), history, resumed=resume is not None, seconds=loop_s,
                       first_val_loss=first_val, dropped=dict(stream.dropped), grad_norms=grad_norms, probes=probes,
                       val_loss_other_speech=val_other)


def evaluate(engine, data, pad_id: int, micro: int, rank: int, world: int, *, other_speech: bool = False) -> float | None:
    """Mean target-token loss over every validation row that fits (all ranks).

    ``other_speech`` (talker stages): each row is scored against the next row's speech codes instead
    of its own. A talker that listens to the thinker scores its own row's speech better; one that
    only continues codec ids (a codec language model) scores both the same."""
    import dataclasses

    import torch
    import torch.distributed as dist

    from tasks.core.examples import collate

    examples, _ = data.all_examples()
    if not examples:
        return None
    if other_speech:
        if len(examples) < 2 or any(e.codes is None for e in examples):
            return None
        # Another row's speech, spread over this row's tokens by estimate (its alignment is another text's).
        examples = [dataclasses.replace(e, codes=examples[(i + 1) % len(examples)].codes, bounds=None)
                    for i, e in enumerate(examples)]
    was_training = engine.training
    engine.eval()
    tot = torch.zeros(2, device=engine.device)
    with torch.no_grad():
        mine = examples[rank::world]
        for i in range(0, len(mine), micro):
            mb = data.load_features(mine[i:i + micro])
            batch = {k: v.to(engine.device) for k, v in collate(mb, pad_id).items()}
            tot[0] += engine(**batch).float()
            tot[1] += sum(e.n_targets for e in mb)
    dist.all_reduce(tot)
    if was_training:
        engine.train()
    return (tot[0] / tot[1].clamp(min=1)).item()
