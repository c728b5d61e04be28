"""How much of a spoken answer a listener hears: the intelligibility chain of the evaluation.

For each spoken answer, its response text (what the thinker wrote, spoken with numbers in words by
``tasks.synth.verbalize.speakable``, as the synthesize stage speaks training responses) is heard by an
offline ASR (pocketsphinx with a bigram LM of the training responses, ``models.asr.SphinxASR``) in
three forms:

    reference     the TTS (espeak) speaking the response: the ASR's own ceiling on this voice
    resynthesis   the codec's encode + decode of the reference: the codec's ceiling
    talker        the talker's speech decoded by the codec: what users hear

Each gets a word recall against the response's words (``models.asr.word_recall``: bag of words, with
repeats); ``recall_talker_chance`` is the talker transcript's recall of *another* answer's words, what
the LM's shared template words ("the answer is") score by themselves. **Heard answer**: the talker transcript's spoken numbers are turned into digits with
text2num's ``alpha2digit`` (AudioBench never matches numbers in words, and an ASR writes words), then
scored exactly like the written answer (``metric.is_correct``). Also per answer: talker audio seconds
against the reference's (``audio_length_ratio``), its RMS level in dBFS, and whether a cap cut it.

    chain = Chain.build(training_responses, codec, work_dir)
    heard = chain.hear(response, talker_wave, sample_rate, gold, split)    # a JSON-safe dict
    metrics = summarize(rows, splits)    # rows carry row["heard"]; split/recall_talker, ...

    python -m tasks.evaluate.intelligibility reports/evaluate/tis --codec checkpoints/codec
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

FORMS = ("reference", "resynthesis", "talker")
CAPS = ("max_audio_seconds", "audio_length")  # audio_end values that mean a cap cut the speech


def spoken_text(response: str) -> str:
    """The response as a TTS speaks it (numbers and symbols in words)."""
    from tasks.synth.verbalize import speakable

    return speakable(response)


def heard_answer_text(transcript: str) -> str:
    """An ASR transcript with its spoken numbers as digits ("the answer is thirty one" -> "... 31"), so
    AudioBench's extraction can read it."""
    from models.tokenizer import numbers_as_digits

    return numbers_as_digits(transcript) if transcript else ""


def dbfs(wave: np.ndarray) -> float | None:
    """RMS level in dBFS (None for no samples; -inf digital silence is reported as -120)."""
    w = np.asarray(wave, np.float64)
    if not len(w):
        return None
    rms = float(np.sqrt(np.mean(w**2)))
    return round(20 * math.log10(rms), 2) if rms > 1e-6 else -120.0


@dataclass
class Chain:
    """The ASR, the reference TTS and the codec of one evaluation."""

    asr: Any  # models.asr.SphinxASR
    tts: Any  # models.tts backend (EspeakTTS)
    codec: Any  # models.codec.Codec

    @classmethod
    def build(cls, training_responses: Iterable[str], codec, work_dir: str | Path,
              voice: tuple[str, int, int] | None = None) -> "Chain":
        """The ASR's LM from the training responses (spoken), written to ``work_dir/lm.arpa``; the
        reference said by ``voice`` (name, rate, pitch: the voice the talker learned, ``response_voice``),
        espeak's en-us at 175 wpm, pitch 50 when None."""
        from models.asr import SphinxASR
        from models.tts import EspeakTTS

        texts = [spoken_text(r) for r in training_responses if r and r.strip()]
        if not texts:
            raise ValueError("the ASR's language model needs training responses; none were given "
                             "(is data/synthesize empty?)")
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        tts = EspeakTTS(*voice) if voice else EspeakTTS()
        return cls(SphinxASR.from_texts(texts, Path(work_dir) / "lm.arpa"), tts, codec)

    def reference(self, spoken: str) -> tuple[np.ndarray, int]:
        from models.wave import resample

        w, sr = self.tts.synthesize(spoken)
        return resample(w, sr, self.codec.sample_rate), self.codec.sample_rate

    def resynthesis(self, wave: np.ndarray, sr: int) -> np.ndarray:
        return self.codec.decode(self.codec.encode(wave, sr))

    def hear(self, response: str, talker: np.ndarray | None, sample_rate: int, gold: str, split: str,
             audio_end: str | None = None, keep_waves: bool = False, other_response: str | None = None) -> dict[str, Any]:
        """Transcripts, recalls, heard answer and audio numbers of one spoken answer (module doc).
        ``keep_waves``: also return the three waves under ``"waves"`` (not JSON: pop it before saving).
        ``other_response``: another answer's response; the talker transcript's recall of *its* words
        (``recall_talker_chance``) is what the LM's template words alone score."""
        from models.asr import word_recall
        from tasks.evaluate.metric import extract_answer, is_correct

        spoken = spoken_text(response) if response.strip() else ""
        out: dict[str, Any] = {"spoken_text": spoken}
        if not spoken:
            return out  # nothing was said: no recall to measure
        ref, sr = self.reference(spoken)
        waves = {"reference": (ref, sr), "resynthesis": (self.resynthesis(ref, sr), self.codec.sample_rate)}
        if talker is not None and len(talker):
            waves["talker"] = (np.asarray(talker, np.float32), sample_rate)
        for form in FORMS:
            if form not in waves:
                out[f"{form}_transcript"], out[f"recall_{form}"] = "", 0.0
                continue
            w, r = waves[form]
            hyp = self.asr.transcribe(w, r)
            out[f"{form}_transcript"] = hyp
            out[f"recall_{form}"] = round(word_recall(spoken, hyp), 4)
        if other_response and other_response.strip() and other_response != response:
            out["recall_talker_chance"] = round(word_recall(spoken_text(other_response), out["talker_transcript"]), 4)
        heard = heard_answer_text(out["talker_transcript"])
        out["heard_text"] = heard
        out["heard_extracted"] = extract_answer(heard) if heard else None
        out["heard_correct"] = bool(heard) and is_correct(heard, gold, split)
        t_sec = len(waves["talker"][0]) / sample_rate if "talker" in waves else 0.0
        out["reference_seconds"] = round(len(ref) / sr, 3)
        out["talker_seconds"] = round(t_sec, 3)
        out["audio_length_ratio"] = round(t_sec / max(len(ref) / sr, 1e-9), 3)
        out["talker_dbfs"] = dbfs(waves["talker"][0]) if "talker" in waves else None
        out["reference_dbfs"] = dbfs(ref)
        out["audio_capped"] = audio_end in CAPS
        if keep_waves:
            out["waves"] = waves
        return out


def _mean(xs: Iterable[float | None]) -> float | None:
    v = [float(x) for x in xs if x is not None]
    return round(sum(v) / len(v), 4) if v else None


def group_metrics(rows: Sequence[dict]) -> dict[str, float | int | None]:
    """Intelligibility metrics of rows that carry ``row["heard"]`` with a spoken text."""
    hs = [(r, r["heard"]) for r in rows if r.get("heard", {}).get("spoken_text")]
    if not hs:
        return {}
    out: dict[str, float | int | None] = {"heard_n": len(hs)}
    for form in FORMS:
        out[f"recall_{form}"] = _mean(h[f"recall_{form}"] for _, h in hs)
    out["recall_talker_chance"] = _mean(h.get("recall_talker_chance") for _, h in hs)
    out["heard_accuracy"] = _mean(float(h["heard_correct"]) for _, h in hs)
    out["heard_written_accuracy"] = _mean(float(bool(r["correct"])) for r, _ in hs)  # the same answers, read
    out["audio_length_ratio"] = _mean(h["audio_length_ratio"] for _, h in hs)
    out["talker_dbfs"] = _mean(h["talker_dbfs"] for _, h in hs)
    out["reference_dbfs"] = _mean(h["reference_dbfs"] for _, h in hs)
    out["audio_capped"] = _mean(float(h["audio_capped"]) for _, h in hs)
    ref = out["recall_reference"] or 0.0
    out["resynthesis_vs_reference"] = round(out["recall_resynthesis"] / ref, 4) if ref else None
    res = out["recall_resynthesis"] or 0.0
    out["talker_vs_resynthesis"] = round(out["recall_talker"] / res, 4) if res else None
    return out


def summarize(rows: Sequence[dict], splits: Sequence[str]) -> dict[str, Any]:
    """``split/metric`` and ``overall/metric`` intelligibility numbers of the main (non-sweep) rows."""
    main = [r for r in rows if not r.get("sweep")]
    out: dict[str, Any] = {}
    for name, group in [(s, [r for r in main if r["split"] == s]) for s in splits] + [("overall", main)]:
        out.update({f"{name}/{k}": v for k, v in group_metrics(group).items()})
    return out


def training_responses(data_dir: str | Path, limit: int = 5000) -> list[str]:
    """Responses of the training set the ASR's LM is built from (the first ``limit``)."""
    from tasks.core.dataset import load_samples

    return [r["response"] for r in load_samples(data_dir, "train", ["response"])[:limit]]


def response_voice(data_dir: str | Path) -> tuple[str, int, int] | None:
    """The voice the training responses were said in (the dataset's ``response_voice`` column, the most
    common one), so the reference is said as the talker learned to speak; None where the data predates
    the column or mixes voices per question (``synthesize.tts.response_voice: ""``)."""
    from collections import Counter

    import pyarrow.parquet as pq

    from models.tts import parse_voice

    path = Path(data_dir) / "train.parquet"
    if "response_voice" not in pq.read_schema(path).names:
        return None
    names = Counter(str(v or "") for v in pq.read_table(path, columns=["response_voice"]).column(0).to_pylist())
    name, n = names.most_common(1)[0] if names else ("", 0)
    if not name or n < 0.5 * sum(names.values()):
        return None
    return parse_voice(name)


LISTEN_ANSWERS = 3  # spoken answers whose three forms (reference, resynthesis, talker) are kept to listen to


def load_codec_dir(codec_dir: str | Path):
    """The codec stage's codec in ``codec_dir`` (its kind read from codec.json)."""
    import json

    from models.codec import load_codec

    cfg = Path(codec_dir) / "codec.json"
    if not cfg.exists():
        raise FileNotFoundError(f"no codec in {codec_dir}; run the codec stage first (`python -m tasks.codec`)")
    return load_codec(f"{json.loads(cfg.read_text())['kind']}:{codec_dir}")


def assess(rows: list[dict], pcms: dict[int, tuple[bytes, int]], data_dir: str | Path, codec_dir: str | Path,
           listen_dir: str | Path) -> dict[str, Any]:
    """Hear every spoken main answer: sets ``rows[i]["heard"]`` (``pcms``: row index -> (PCM16, rate)),
    writes the first ``LISTEN_ANSWERS`` answers' three forms and their transcripts to ``listen_dir``
    (replaced whole), and returns the ``split/metric`` numbers of ``summarize``."""
    import json
    import tempfile

    import soundfile as sf

    from models.atomic import atomic_dir
    from models.wave import from_pcm16

    spoken = [i for i in sorted(pcms) if not rows[i].get("sweep")]
    if not spoken:  # nothing spoken: an empty listen/ (DVC declares it)
        with atomic_dir(listen_dir) as d:
            (d / "transcripts.json").write_text("[]")
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        chain = Chain.build(training_responses(data_dir), load_codec_dir(codec_dir), tmp, response_voice(data_dir))
        listen: list[tuple[dict, dict]] = []
        for k, i in enumerate(spoken):
            r = rows[i]
            pcm, sr = pcms[i]
            other = rows[spoken[(k + 1) % len(spoken)]]["response"]  # chance: another answer's words
            h = chain.hear(r["response"], from_pcm16(pcm), sr, r["gold"], r["split"], r.get("audio_end"),
                           keep_waves=len(listen) < LISTEN_ANSWERS, other_response=other)
            waves = h.pop("waves", None)
            r["heard"] = h
            if waves:
                listen.append((r, waves))
    with atomic_dir(listen_dir) as d:
        index = []
        for r, waves in listen:
            stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in r["id"])
            entry = {"id": r["id"], "split": r["split"], "response": r["response"], "spoken_text": r["heard"]["spoken_text"]}
            for form, (w, sr) in waves.items():
                sf.write(str(d / f"{stem}_{form}.wav"), w, sr, format="WAV")
                entry[form] = {"wav": f"{stem}_{form}.wav", "transcript": r["heard"][f"{form}_transcript"],
                               "recall": r["heard"][f"recall_{form}"]}
            index.append(entry)
        (d / "transcripts.json").write_text(json.dumps(index, indent=1))
    return summarize(rows, sorted({rows[i]["split"] for i in spoken}, key=[r["split"] for r in rows].index))


def main(argv: list[str] | None = None) -> None:
    """Re-hear an evaluation's spoken answers (its predictions.jsonl + wavs/) and print the metrics."""
    import argparse
    import json

    import soundfile as sf

    ap = argparse.ArgumentParser(prog="python -m tasks.evaluate.intelligibility", description=main.__doc__)
    ap.add_argument("report_dir", help="reports/evaluate/<format>")
    ap.add_argument("--codec", default="checkpoints/codec")
    ap.add_argument("--data", default="data/synthesize", help="training set the ASR's LM is built from")
    args = ap.parse_args(argv)
    d = Path(args.report_dir)
    chain = Chain.build(training_responses(args.data), load_codec_dir(args.codec), d / "asr", response_voice(args.data))
    rows = [json.loads(x) for x in (d / "predictions.jsonl").read_text().splitlines() if x.strip()]
    for r in rows:
        if r.get("wav") and not r.get("sweep"):
            w, sr = sf.read(str(d / r["wav"]), dtype="float32")
            r["heard"] = chain.hear(r["response"], w, sr, r["gold"], r["split"], r.get("audio_end"))
    print(json.dumps(summarize(rows, sorted({r["split"] for r in rows})), indent=1))


if __name__ == "__main__":
    main()
