"""Steps 2-4 of synthesis for one batch of records: rewrite, speak and interleave, verify.

``process_batch`` is a plain function (Ray Data ``map_batches`` runs it over shards; tests call it
directly). Per record it returns one row: the sample's columns, encoded audio bytes, ``reject``
(empty when kept, else the reason, one of ``tasks.synth.checks.REASONS``) and ``detail`` (what
exactly failed). It never raises for a bad record.

Text rules, in order (``check_text``): math the speaker cannot say, an empty or symbol-laden spoken
question, the spoken question read back by the words-to-number reader (``tasks.synth.readback``)
against the question's values, the response's sub-questions, markup and repeated words, the spoken
response read back against the response, the stated answer, lengths; then drift and the layout.

Heavy state (TTS voices, the ASR decoder, the LLM client) is built once per worker process.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import time
from dataclasses import dataclass

import numpy as np

from models.tts import voice_name
from tasks.core.params import SynthesizeParams

log = logging.getLogger("synthesize")

SILENCE_RMS = 1e-3
SECONDS_PER_WORD = (0.12, 2.0)  # plausible speech duration per spoken word


@dataclass
class Rules:
    """What ``process_batch`` needs besides the records (picklable: Ray ships it to workers)."""

    cfg: SynthesizeParams
    tokenizer: object
    speak: int = 2
    think: int = 8
    with_audio: bool = True  # False: text, tokens and drift only (fast tests of real datasets)


_WORKER: dict = {}


def _tts(rules: Rules, voice: str, rate: int, pitch: int):
    from models.tts import make_tts

    t = rules.cfg.tts
    key = (t.backend, voice, rate, pitch)
    if key not in _WORKER:
        if t.backend == "piper":
            _WORKER[key] = make_tts("piper", model_path=t.piper_model, length_scale=175 / rate)
        else:
            _WORKER[key] = make_tts("espeak", voice=voice, rate=rate, pitch=pitch)
    return _WORKER[key]


def _asr():
    if "asr" not in _WORKER:
        from models.asr import SphinxChecker

        _WORKER["asr"] = SphinxChecker()
    return _WORKER["asr"]


def _llm(rules: Rules):
    if "llm" not in _WORKER:
        from tasks.synth.llm import LLMClient

        _WORKER["llm"] = LLMClient.from_params(rules.cfg.llm)
    return _WORKER["llm"]


def unit(seed: int, key: str, salt: str) -> float:
    """A reproducible number in [0, 1) per (seed, sample, purpose), the same on any worker."""
    h = hashlib.blake2b(f"{seed}/{key}/{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def voice_for(cfg: SynthesizeParams, key: str) -> tuple[str, int, int]:
    rng = random.Random(int(unit(cfg.seed, key, "voice") * 2**32))
    t = cfg.tts
    return rng.choice(t.voices), rng.randint(t.rate_min, t.rate_max), rng.randint(t.pitch_min, t.pitch_max)


def response_voice_for(cfg: SynthesizeParams, key: str) -> tuple[str, int, int]:
    """The voice a sample's response is said in: the model's one voice (``synthesize.tts.response_voice``),
    or its question's drawn voice when that is ""."""
    t = cfg.tts
    return (t.response_voice, t.response_rate, t.response_pitch) if t.response_voice else voice_for(cfg, key)


def encode_audio(wav: np.ndarray, sr: int, fmt: str) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wav, sr, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue()


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def _speak(rules: Rules, text: str, voice: tuple[str, int, int], what: str,
           words: list | None = None) -> tuple[np.ndarray, float]:
    """TTS of ``text``, checked for silence and duration; ``words`` (a list) receives the backend's word
    starts ``(character offset, seconds)`` where it reports them (espeak)."""
    try:
        backend = _tts(rules, *voice)
        if words is not None and hasattr(backend, "synthesize_timed"):
            wav, sr, said = backend.synthesize_timed(text)
            words.extend(said)
        else:
            wav, sr = backend.synthesize(text)
    except Exception as e:  # noqa: BLE001 - any backend failure is a counted rejection
        log.debug("tts failed on %r: %s", text[:60], e)
        raise _Rejected("tts_failed", f"{type(e).__name__}: {e}") from e
    if wav.size == 0 or float(np.sqrt(np.mean(np.square(wav)))) < SILENCE_RMS:
        raise _Rejected(f"silent_{what}_audio")
    seconds = len(wav) / sr
    n_words = max(1, len(text.split()))
    lo, hi = SECONDS_PER_WORD
    if not lo * n_words <= seconds <= hi * n_words + 1.0:
        raise _Rejected(f"bad_{what}_duration", f"{seconds:.1f} s for {n_words} words")
    return wav, seconds


def _decompose(rules: Rules, row: dict, stats: dict):
    """The record as a TextSample; an answer-only record gets a generated solution when the
    rewriter is configured (then verified like any other)."""
    from tasks.synth.solutions import NoSolution, decompose, from_generated

    try:
        return decompose(str(row["source"]), str(row["id"]), json.loads(row["record"]))
    except NoSolution as e:
        if not rules.cfg.llm.rewrite:
            raise
        solution = _llm(rules).solve(e.question, e.answer, stats)
        if solution is None:
            raise
        return from_generated(str(row["id"]), e.source, e.question, solution, e.answer)


def check_text(s, spoken: str, spoken_response: str, cfg: SynthesizeParams) -> None:
    """Every text rule, in order; raises _Rejected with the first reason that applies."""
    from models.drift import answer_of, normalize_number
    from tasks.synth.checks import markup_reading, response_problem
    from tasks.synth.readback import mismatch
    from tasks.synth.verbalize import unreadable_math, unspeakable_chars

    why = unreadable_math(s.question)
    if why:
        raise _Rejected("unreadable_math", why)
    if not spoken:
        raise _Rejected("empty_question")
    if not s.response or not s.reasoning:
        raise _Rejected("empty_response")
    bad = unspeakable_chars(spoken)
    if bad:
        raise _Rejected("unspeakable_question", "".join(sorted(bad)))
    said = markup_reading(spoken)
    if said:
        raise _Rejected("markup_in_question", f"reads {said!r}")
    diff = mismatch(s.question, spoken)
    if diff:
        raise _Rejected("number_mismatch_question", diff)
    problem = response_problem(s.response, spoken_response)
    if problem:
        raise _Rejected(*problem)
    diff = mismatch(s.response, spoken_response)
    if diff:
        raise _Rejected("number_mismatch_response", diff)
    if answer_of(s.response) != normalize_number(s.answer) or not s.response.rstrip().endswith(f"The answer is {s.answer}."):
        raise _Rejected("wrong_answer", f"response says {answer_of(s.response)}, dataset says {s.answer}")
    if len(spoken.split()) > cfg.max_question_words:
        raise _Rejected("question_too_long", f"{len(spoken.split())} words")
    if len(s.response.split()) > cfg.max_response_words:
        raise _Rejected("response_too_long", f"{len(s.response.split())} words")


def process_one(rules: Rules, row: dict, stats: dict) -> dict:
    from dataclasses import replace

    from models.drift import DriftError, check_drift, tokenize_sample
    from models.format import FormatError, Schedule, interleave
    from models.tokenizer import control_ids, text_prompt
    from tasks.synth.solutions import Reject
    from tasks.synth.verbalize import speakable

    cfg, tok = rules.cfg, rules.tokenizer
    schedule = Schedule(rules.speak, rules.think)
    out = {"idx": int(row["idx"]), "id": str(row["id"]), "source": str(row["source"]), "reject": "", "detail": ""}
    s, spoken, spoken_response = None, "", ""
    try:
        s = _decompose(rules, row, stats)
        if cfg.llm.rewrite:
            s = replace(s, response=_llm(rules).rewrite_response(s, stats))  # TextSample is frozen
        spoken, spoken_response = speakable(s.question), speakable(s.response)
        check_text(s, spoken, spoken_response, cfg)
        if cfg.align_facts:  # no column fact cut by a think block (tasks/synth/blocks.py)
            from tasks.synth.blocks import align_facts

            s = replace(s, reasoning=align_facts(tok, s.reasoning, schedule.think))
        try:
            t = tokenize_sample(tok, s.question, s.response, s.reasoning, schedule)
            ids = control_ids(tok)
            lay = interleave(text_prompt(tok, s.question), t.response_ids, t.reasoning_ids, ids, schedule,
                             min_block=t.min_block, delay_eos=True)
        except DriftError as e:
            raise _Rejected("drift", str(e)) from e
        except FormatError as e:
            raise _Rejected("format", str(e)) from e
        if len(lay) > cfg.max_len:
            raise _Rejected("sequence_too_long", f"{len(lay)} tokens")
        late = check_drift(lay, tok, s.question, ids, schedule)
        if late:
            raise _Rejected("drift", f"{late[0].number} said in block {late[0].block}")
        if cfg.llm.judge and not _llm(rules).judge(s.question, spoken, stats):
            raise _Rejected("judge_rejected")
        out.update(s.to_dict(), spoken_question=spoken, spoken_response=spoken_response, **vars(t), n_tokens=len(lay))
        out.update(question_wav=b"", response_wav=b"", question_seconds=0.0, response_seconds=0.0)
        if rules.with_audio:
            voice = voice_for(cfg, s.id)
            t0 = time.perf_counter()
            qwav, qsec = _speak(rules, spoken, voice, "question")
            rwav, rsec = (None, 0.0)
            if cfg.tts.speak_response and _speaks_response(row):
                said: list = []
                rvoice = response_voice_for(cfg, s.id)
                rwav, rsec = _speak(rules, spoken_response, rvoice, "response", said)
                out["response_voice"] = voice_name(rvoice)
                out["response_starts"] = _response_starts(tok, s.response, t.response_ids, spoken_response, said, rsec)
            stats["tts_seconds"] += time.perf_counter() - t0
            stats["tts_audio_seconds"] += qsec + rsec
            if cfg.asr_fraction and unit(cfg.seed, s.id, "asr") < cfg.asr_fraction:
                asr = _asr()
                asr.set_vocabulary(_WORKER.get("batch_vocab", ()))
                recall, _ = asr.recall(qwav, spoken)
                stats["asr_checked"] += 1
                stats["asr_recall_sum"] += recall
                if recall < cfg.asr_min_recall:
                    raise _Rejected("asr_mismatch", f"recall {recall:.2f}")
            out.update(question_wav=encode_audio(qwav, 16000, cfg.tts.audio_format), question_seconds=qsec,
                       voice=voice_name(voice))
            if rwav is not None:
                out.update(response_wav=encode_audio(rwav, 16000, cfg.tts.audio_format), response_seconds=rsec)
    except (Reject, _Rejected) as e:
        out.update(reject=e.reason, detail=e.detail)
    except Exception as e:  # noqa: BLE001 - a bad record never stops the stage
        log.warning("record %s: unexpected %s: %s", row.get("id"), type(e).__name__, e)
        out.update(reject=f"error_{type(e).__name__}", detail=str(e)[:200])
    stats["response_aligned"] += bool(not out["reject"] and out.get("response_starts"))
    if out["reject"]:  # what a person needs to see why (the stage logs a few per reason)
        question = s.question if s is not None else _raw_question(row)
        out.update(question=question, spoken_question=spoken, spoken_response=spoken_response,
                   response=s.response if s is not None else "")
    return out


def _speaks_response(row) -> bool:
    """Whether this record's source speaks its responses (``synthesize.sources[].speak_response``; records
    made elsewhere, e.g. the text pool, do)."""
    flag = row.get("speak_response", True)
    return True if flag is None else bool(flag)


def _response_starts(tok, response: str, ids: list[int], spoken: str, said: list, seconds: float) -> list[float]:
    """When each response token starts in its speech (``tasks.synth.timing``), or [] where the backend
    reports no word times or the words cannot be matched (the talker then spreads the clip by estimate)."""
    from models.saying import said_seconds
    from tasks.synth.timing import token_starts

    starts = token_starts([tok.decode([i]) for i in ids], response, spoken, said, seconds, said_seconds)
    return [round(x, 4) for x in starts] if starts is not None else []


def _raw_question(row: dict) -> str:
    try:
        rec = json.loads(row["record"])
    except (TypeError, ValueError):
        return ""
    if not isinstance(rec, dict):
        return ""
    if "Body" in rec:
        return f"{rec.get('Body', '')} {rec.get('Question', '')}".strip()
    return str(rec.get("question") or rec.get("query") or "")


EMPTY = {
    "source": "", "kind": "", "question": "", "spoken_question": "", "spoken_response": "", "reasoning": "",
    "response": "", "answer": "", "detail": "",
    "question_ids": [], "response_ids": [], "reasoning_ids": [], "min_block": [], "n_tokens": 0,
    "question_wav": b"", "response_wav": b"", "question_seconds": 0.0, "response_seconds": 0.0, "voice": "",
    "response_voice": "", "response_starts": [],
}


def process_batch(batch, rules: Rules):
    """Ray Data batch (pandas DataFrame of records) -> DataFrame of samples, one row per record."""
    import pandas as pd

    rows = batch.to_dict("records") if hasattr(batch, "to_dict") else batch
    stats = {"tts_seconds": 0.0, "tts_audio_seconds": 0.0, "asr_checked": 0, "asr_recall_sum": 0.0, "response_aligned": 0,
             "llm_calls": 0, "llm_fallback": 0, "llm_errors": 0}
    if rules.with_audio and rules.cfg.asr_fraction:
        from models.asr import words
        from tasks.synth.verbalize import speakable

        vocab: set[str] = set()
        for r in rows:
            try:
                q = json.loads(r["record"])
                vocab.update(words(speakable(" ".join(str(v) for v in q.values() if isinstance(v, str))[:4000])))
            except Exception:  # noqa: BLE001 - vocabulary is best effort
                pass
        _WORKER["batch_vocab"] = vocab
    out = [{**EMPTY, **process_one(rules, r, stats)} for r in rows]
    # Per-batch counters ride on every row's "batch_stats" of the batch's first row only.
    for i, o in enumerate(out):
        o["batch_stats"] = json.dumps(stats) if i == 0 else ""
    return pd.DataFrame(out)
