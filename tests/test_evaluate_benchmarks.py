"""Spoken-MQA benchmarks (tasks/evaluate/benchmarks/): a copy in the published schema, written here
with real espeak audio, read back from every layout a user may hold; bad copies fail with errors that
name the problem; the offline proxy never repeats a training question."""

from __future__ import annotations

import io
import json
import logging
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from tasks.evaluate import benchmarks as B
from tasks.evaluate.benchmarks import BenchmarkError, load_benchmark
from tasks.evaluate.metric import is_correct, normalize_answer
from conftest import SHARED_DATA, needs_shared_data

# (split, transcript, answer.text): arithmetic splits with a string, reasoning splits with a list.
ROWS = [
    ("short_digit", "What is twelve plus seven?", "19"),
    ("short_digit", "What is nine times eight?", "72"),
    ("short_digit", "What is four point five minus one point two?", "3.3"),
    ("long_digit", "What is four thousand and twelve plus nine hundred?", "4912"),
    ("long_digit", "What is one hundred and two point five times two?", "205"),
    ("single_step_reasoning", "Tom has five apples and gets three more. How many apples does he have?", ["8"]),
    ("single_step_reasoning", "A box holds six pens. How many pens are in four boxes?", ["24"]),
    ("multi_step_reasoning", "Ana buys three books at four dollars each and pays with twenty. What is her change?",
     ["8"]),
    ("multi_step_reasoning", "Liam reads ten pages a day for a week, then twelve more. How many pages?", ["82"]),
]
INSTRUCTION = "Answer the question in the audio."
NATIVE_SR = 22050  # the copy's audio rate: loading resamples it to 16 kHz


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    """Real espeak speech of every transcript, at NATIVE_SR."""
    from models.tts import make_tts
    from models.wave import resample

    tts = make_tts("espeak", voice="en-us", rate=175, pitch=50)
    return {t: resample(tts.synthesize(t)[0], 16000, NATIVE_SR) for _, t, _ in ROWS}


def _wav_bytes(wav: np.ndarray, sr: int = NATIVE_SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _audio_type():
    return pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def split_table(split: str, speech: dict, rows=None, answer_type=None) -> pa.Table:
    """One split in the published schema, with the hub's features metadata."""
    rows = [r for r in ROWS if r[0] == split] if rows is None else rows
    if answer_type is None:
        answer_type = pa.string() if split in ("short_digit", "long_digit") else pa.list_(pa.string())
    schema = pa.schema(
        [("context", _audio_type()), ("context_transcript", pa.string()),
         ("instruction", pa.struct([("audio", _audio_type()), ("text", pa.string())])),
         ("answer", pa.struct([("text", answer_type)]))],
        metadata={"huggingface": json.dumps({"info": {"features": {
            "context": {"_type": "Audio"}, "context_transcript": {"dtype": "string", "_type": "Value"},
            "instruction": {"audio": {"_type": "Audio"}, "text": {"dtype": "string", "_type": "Value"}},
            "answer": {"text": ({"dtype": "string", "_type": "Value"} if answer_type == pa.string() else
                                {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"})}}}})},
    )
    return pa.Table.from_pydict({
        "context": [{"bytes": _wav_bytes(speech[t]), "path": None} for _, t, _ in rows],
        "context_transcript": [t for _, t, _ in rows],
        "instruction": [{"audio": None, "text": INSTRUCTION} for _ in rows],
        "answer": [{"text": a} for _, _, a in rows],
    }, schema=schema)


def write_copy(root, speech, layout: str, splits=B.SPLITS) -> object:
    """The copy as a user may hold it; returns the path to hand to load_benchmark."""
    tables = {s: split_table(s, speech) for s in splits}
    if layout == "hub_snapshot":  # what `hf download amao0o0/spoken-mqa --repo-type dataset` gives
        (root / "data").mkdir(parents=True)
        for s, t in tables.items():
            pq.write_table(t, root / "data" / f"{s}-00000-of-00001.parquet")
        (root / "README.md").write_text("---\nconfigs: []\n---\n")
    elif layout == "parquet_per_split":
        root.mkdir(parents=True)
        for s, t in tables.items():
            pq.write_table(t, root / f"{s}.parquet")
    elif layout == "hub_parquet_conversion":  # refs/convert/parquet: default/<split>/0000.parquet
        for s, t in tables.items():
            (root / "default" / s).mkdir(parents=True)
            pq.write_table(t, root / "default" / s / "0000.parquet")
    elif layout == "save_to_disk":
        import datasets

        datasets.DatasetDict({s: datasets.Dataset(t) for s, t in tables.items()}).save_to_disk(str(root))
    elif layout == "single_file":
        root.mkdir(parents=True)
        pq.write_table(tables["short_digit"], root / "short_digit.parquet")
        return root / "short_digit.parquet"
    return root


@pytest.mark.parametrize("layout", ["hub_snapshot", "parquet_per_split", "hub_parquet_conversion", "save_to_disk",
                                    "single_file"])
def test_reads_a_spoken_mqa_copy(tmp_path, speech, layout: str) -> None:
    src = write_copy(tmp_path / "copy", speech, layout)
    splits = ["short_digit"] if layout == "single_file" else list(B.SPLITS)
    got = load_benchmark(src, splits)
    assert list(got) == splits
    for split in splits:
        want = [r for r in ROWS if r[0] == split]
        items = got[split]
        assert [it.id for it in items] == [f"{split}-{i}" for i in range(len(want))]
        for it, (_, transcript, answer) in zip(items, want):
            assert it.split == split and it.transcript == transcript and it.instruction == INSTRUCTION
            assert it.answer == (answer if isinstance(answer, str) else answer[0])
            assert it.sample_rate == 16000 and it.audio.dtype == np.float32 and it.audio.ndim == 1
            native = speech[transcript]
            assert abs(len(it.audio) - len(native) * 16000 / NATIVE_SR) <= 2  # resampled, not cut
            back = np.interp(np.arange(len(native)) * 16000 / NATIVE_SR, np.arange(len(it.audio)), it.audio)
            assert np.corrcoef(back, native)[0, 1] > 0.95  # the same speech
    # native rate kept on request
    assert load_benchmark(src, splits[:1], sample_rate=None)[splits[0]][0].sample_rate == NATIVE_SR


def test_limit_takes_audiobench_subset(tmp_path, speech) -> None:
    import datasets

    clip = ROWS[0][1]
    rows = [("short_digit", clip, str(i)) for i in range(30)]
    (tmp_path / "data").mkdir()
    pq.write_table(split_table("short_digit", speech, rows), tmp_path / "data" / "short_digit-00000-of-00001.parquet")
    got = load_benchmark(tmp_path, ["short_digit"], limit_per_split=7)["short_digit"]
    # AudioBench: raw_data.shuffle(seed=42).select(range(number_of_samples))
    want = datasets.Dataset.from_dict({"i": list(range(30))}).shuffle(seed=42).select(range(7))["i"]
    assert [it.id for it in got] == [f"short_digit-{i}" for i in want]
    assert [it.answer for it in got] == [str(i) for i in want]
    assert len(load_benchmark(tmp_path, ["short_digit"], limit_per_split=100)["short_digit"]) == 30


def _one_split(tmp_path, table: pa.Table, split: str = "short_digit"):
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, tmp_path / "data" / f"{split}-00000-of-00001.parquet")
    return tmp_path


def _set(table: pa.Table, name: str, values: list, type_=None) -> pa.Table:
    arr = pa.array(values, type=type_)
    return table.set_column(table.column_names.index(name), name, arr)


@pytest.mark.parametrize(
    ("mutate", "split", "message"),
    [
        (lambda t: t.drop_columns(["answer"]), "short_digit", r"lacks field\(s\) \['answer'\]"),
        (lambda t: t.drop_columns(["context", "context_transcript"]), "short_digit",
         r"lacks field\(s\) \['context', 'context_transcript'\]"),
        (lambda t: t.slice(0, 0), "short_digit", r"split 'short_digit' is empty"),
        (lambda t: _set(t, "instruction", ["Answer."] * 3), "short_digit",
         r"row 0: field 'instruction' must be a struct with 'text'"),
        (lambda t: _set(t, "answer", [{"text": 19}, {"text": 72}, {"text": 3}]), "short_digit",
         r"row 0: answer.text must be a string or a list of strings"),
        (lambda t: _set(t, "answer", [{"text": []}] * 2, pa.struct([("text", pa.list_(pa.string()))])),
         "multi_step_reasoning", r"row 0: answer.text must be"),
        (lambda t: _set(t, "context_transcript", ["a", "", "c"]), "short_digit",
         r"row 1: context_transcript must be a non-empty string"),
        (lambda t: _set(t, "context_transcript", ["a", "b", None]), "short_digit", r"row 2: context_transcript"),
        (lambda t: _set(t, "context", [{"bytes": b"not audio", "path": None}] * 3, _audio_type()), "short_digit",
         r"row 0: context audio cannot be decoded"),
        (lambda t: _set(t, "context", [{"bytes": None, "path": None}] * 3, _audio_type()), "short_digit",
         r"row 0: context holds no audio"),
        (lambda t: _set(t, "context", [{"bytes": None, "path": "missing.wav"}] * 3, _audio_type()), "short_digit",
         r"missing.wav does not exist"),
        (lambda t: _set(t, "context", ["x.wav"] * 3), "short_digit", r"field 'context' must be audio"),
        (lambda t: _set(t, "answer", [{"text": ["1,000"]}] * 2, pa.struct([("text", pa.list_(pa.string()))])),
         "multi_step_reasoning", r"row 0: gold answer '1,000' does not normalise"),
    ],
)
def test_bad_copies_fail_clearly(tmp_path, speech, mutate, split: str, message: str) -> None:
    src = _one_split(tmp_path, mutate(split_table(split, speech)), split)
    with pytest.raises(BenchmarkError, match=message):
        load_benchmark(src, [split])


def test_bad_requests_fail_clearly(tmp_path, speech, monkeypatch) -> None:
    src = _one_split(tmp_path / "copy", split_table("short_digit", speech))
    with pytest.raises(BenchmarkError, match=r"no split\(s\) \['long_digit'\]; it holds \['short_digit'\]"):
        load_benchmark(src, ["short_digit", "long_digit"])
    with pytest.raises(BenchmarkError, match="non-empty list"):
        load_benchmark(src, "short_digit")  # type: ignore[arg-type]
    with pytest.raises(BenchmarkError, match="twice"):
        load_benchmark(src, ["short_digit", "short_digit"])
    with pytest.raises(BenchmarkError, match=">= 0"):
        load_benchmark(src, ["short_digit"], limit_per_split=-1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchmarkError, match="holds no .parquet or .arrow files"):
        load_benchmark(tmp_path / "empty")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(BenchmarkError, match="cannot read .*broken.parquet"):
        load_benchmark(tmp_path / "broken.parquet", ["broken"])
    # a missing local path is "not found", never a hub download (its folder exists)
    with pytest.raises(BenchmarkError, match="not found"):
        load_benchmark(str(tmp_path / "nope"))
    with pytest.raises(BenchmarkError, match="not found"):
        load_benchmark("./no/such.parquet")


def test_hub_offline_fails_clearly(tmp_path, monkeypatch) -> None:
    import datasets
    import huggingface_hub.constants

    # No network here; offline mode makes the failure immediate instead of after retries, and an
    # empty cache makes sure nothing downloaded earlier answers.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    with pytest.raises(BenchmarkError, match=r"cannot load 'amao0o0/spoken-mqa' split 'short_digit' from the Hugging "
                                             r"Face hub .*Without a network: download it"):
        load_benchmark(B.HUB_ID, ["short_digit"])


# --- the proxy ---------------------------------------------------------------------------------
def _training_as_the_stages_make_it() -> tuple[list[str], set[int]]:
    """Every question training sees, generated as the synthesize stage and the tokenizer do, and the
    seeds they use."""
    from tasks.core.params import load_params
    from tasks.synth.builtin import generate_problems
    from tasks.synth.sources import collect

    p = load_params()
    records, _, _ = collect(p.synthesize)  # exactly the synthesize stage's problems
    questions = [json.loads(r["record"])["question"] for r in records]
    corpus = generate_problems(p.model.tokenizer_corpus, seed=10_000 + p.seed)  # tasks/init_model.py
    seeds = {p.synthesize.seed + i for i in range(len(p.synthesize.sources))} | {10_000 + p.seed}
    return questions + [q.question for q in corpus], seeds


def _key(t: str) -> str:
    return " ".join(t.split()).casefold()


def test_proxy_never_repeats_a_training_question() -> None:
    from tasks.synth.verbalize import speakable

    training, seeds = _training_as_the_stages_make_it()
    assert len(training) >= 2000
    proxy = B.proxy_questions(300, training=training)
    assert list(proxy) == list(B.SPLITS) and all(len(v) == 300 for v in proxy.values())
    train_keys = {_key(q) for q in training} | {_key(speakable(q)) for q in training}
    for split, qs in proxy.items():
        assert B.proxy_seed(split) not in seeds
        for question, spoken, answer in qs:
            assert _key(question) not in train_keys and _key(spoken) not in train_keys, (split, question)
            assert spoken == speakable(question) and not re.search(r"\d", spoken)
            assert normalize_answer(answer) == answer  # golds are already in the scorer's form
    all_keys = [_key(q) for qs in proxy.values() for q, _, _ in qs]
    assert len(all_keys) == len(set(all_keys))  # no question twice in the proxy either


def test_proxy_drops_questions_found_in_training(tmp_path) -> None:
    from tasks.synth.builtin import generate_problems

    first = {s: [p.question for p in generate_problems(5, seed=B.proxy_seed(s), kinds=(B.PROXY_KINDS[s],))]
             for s in B.SPLITS}
    plain = B.proxy_questions(8, training=[])
    assert all([q for q, _, _ in plain[s][:5]] == first[s] for s in B.SPLITS)  # what would come first...
    leaked = [first[s][i] for s in B.SPLITS for i in (0, 2, 4)]
    guarded = B.proxy_questions(8, training=leaked)  # ...is dropped when training has it, and replaced
    for s in B.SPLITS:
        qs = [q for q, _, _ in guarded[s]]
        assert len(qs) == 8 and not set(qs) & set(leaked)
        assert qs[:2] == [first[s][1], first[s][3]]
    # training given as the synthesize stage's output directory
    d = {"question": leaked[:6], "spoken_question": ["x"] * 6, "answer": ["1"] * 6}
    out = B.proxy_questions(3, training=_synth_dir(d, tmp_path))
    assert not {q for qs in out.values() for q, _, _ in qs} & set(leaked[:6])


def test_training_keys_read_the_stored_spoken_form(tmp_path) -> None:
    """A synthesize output's keys are its questions and the spoken forms it stored (not recomputed); a row
    without a stored spoken form, and a list of questions, get ``speakable``: a proxy question matching any
    of them is dropped."""
    from tasks.synth.builtin import generate_problems
    from tasks.synth.verbalize import speakable

    first = [p.question for p in generate_problems(4, seed=B.proxy_seed("short_digit"), kinds=("short_digit",))]
    # rows 0-1: another question text, the candidate's spoken form stored; rows 2-3: the stored form empty
    d = {"question": ["What is one?", "What is two?", first[2], first[3]],
         "spoken_question": [speakable(first[0]), speakable(first[1]).upper(), "", None]}
    keys = B.training_keys(_synth_dir(d, tmp_path))
    assert {_key(speakable(q)) for q in first} <= keys and _key("What is one?") in keys
    out = B.proxy_questions(3, training=tmp_path, splits=("short_digit",))
    assert not {q for q, _, _ in out["short_digit"]} & set(first)
    assert B.training_keys(first[:1]) == {_key(first[0]), _key(speakable(first[0]))}


def _synth_dir(data: dict, root):
    """A synthesize-stage output folder: train/validation parquet with a ``question`` column."""
    half = len(data["question"]) // 2
    pq.write_table(pa.table({k: v[:half] for k, v in data.items()}), root / "train.parquet")
    pq.write_table(pa.table({k: v[half:] for k, v in data.items()}), root / "validation.parquet")
    return root


def test_training_questions_errors(tmp_path) -> None:
    with pytest.raises(BenchmarkError, match="training set .* not found"):
        B.load_training_questions(tmp_path / "nothing")
    pq.write_table(pa.table({"prompt": ["a"]}), tmp_path / "train.parquet")
    with pytest.raises(BenchmarkError, match="no 'question' column"):
        B.load_training_questions(tmp_path)
    with pytest.raises(BenchmarkError, match="must be strings"):
        B.load_training_questions([1, 2])


def test_proxy_is_spoken_written_and_read_back(tmp_path) -> None:
    items = B.make_proxy(2, training=["What is 12 plus 11?"], seed=3)
    assert [it.id for it in items] == [f"{s}-{i}" for s in B.SPLITS for i in range(2)]
    for it in items:
        assert it.sample_rate == 16000 and it.audio.dtype == np.float32
        words = len(it.transcript.split())
        assert 0.12 * words <= it.seconds <= 2.0 * words + 1.0  # speech of that length
        assert float(np.sqrt(np.mean(it.audio**2))) > 1e-3  # not silence
        assert it.instruction == B.INSTRUCTION and "The answer is" in it.instruction
        assert is_correct(f"So the answer is {it.answer}.", it.answer, it.split)
    # same questions, voices and answers again. espeak is not a pure function of its input: the same text in the
    # same voice comes out a little longer or shorter after another synthesis history (models/tts.py; seen up to
    # 0.4 % in one process and over 1 % once in CI), while another voice or rate (1 wpm ~ 0.6 %) moves most clips
    again = B.make_proxy(2, training=["What is 12 plus 11?"], seed=3)
    assert [(a.transcript, a.answer) for a in again] == [(a.transcript, a.answer) for a in items]
    drift = sorted(abs(len(a.audio) - len(b.audio)) / len(a.audio) for a, b in zip(items, again))
    assert drift[-1] < 0.05 and drift[len(drift) // 2] < 0.005, drift

    out = tmp_path / "bench"
    (out / "stale").mkdir(parents=True)
    B.write_benchmark(items, out, meta={"source": "proxy", "seed": 3})
    assert not (out / "stale").exists()  # replaced whole
    assert json.loads((out / "benchmark.json").read_text())["splits"] == {s: 2 for s in B.SPLITS}
    back = load_benchmark(out)
    flat = [it for s in B.SPLITS for it in back[s]]
    for a, b in zip(items, flat):
        assert (a.id, a.split, a.transcript, a.instruction, a.answer) == (b.id, b.split, b.transcript, b.instruction,
                                                                          b.answer)
        assert len(a.audio) == len(b.audio) and np.max(np.abs(a.audio - b.audio)) < 1e-3  # PCM16 FLAC

    import datasets

    cache = str(tmp_path / "hf_cache")
    ds = datasets.load_dataset(str(out), cache_dir=cache)  # what a user (or AudioBench's loader) would do
    assert sorted(ds) == sorted(B.SPLITS)
    assert isinstance(ds["short_digit"].features["context"], datasets.Audio)
    row = ds["multi_step_reasoning"].with_format("arrow")[:1].to_pylist()[0]
    assert row["answer"] == {"text": [items[6].answer]} and row["instruction"]["text"] == B.INSTRUCTION
    # rewritten in place (a new DVC run), the folder must not be served from datasets' cache
    other = B.make_proxy(1, training=[], seed=4)
    B.write_benchmark(other, out)
    ds = datasets.load_dataset(str(out), cache_dir=cache)
    assert {s: ds[s]["context_transcript"][:] for s in B.SPLITS} == {it.split: [it.transcript] for it in other}


def test_write_benchmark_rejects_bad_items(tmp_path) -> None:
    with pytest.raises(BenchmarkError, match="no items"):
        B.write_benchmark([], tmp_path / "x")
    it = B.Item("a", "short_digit", "What is one plus one?", "Solve.", "2", np.zeros(160, np.float32), 16000)
    with pytest.raises(BenchmarkError, match="duplicate item ids"):
        B.write_benchmark([it, it], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_long_loops_log_progress(caplog, monkeypatch) -> None:
    monkeypatch.setattr(B.base, "PROGRESS_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="evaluate"):
        B.make_proxy(2, training=[], splits=["short_digit", "long_digit"])
    lines = [r.getMessage() for r in caplog.records if "speaking questions" in r.getMessage()]
    assert [ln.split(": ")[2].split(" ")[0] for ln in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert "s of audio" in lines[-1]


# --- GSM8K test and SVAMP ------------------------------------------------------------------------
@needs_shared_data
def test_gsm8k_and_svamp_are_spoken_like_training() -> None:
    from tasks.synth.verbalize import speakable

    recs = [json.loads(line) for line in (SHARED_DATA / "gsm8k" / "test.jsonl").read_text().splitlines()[:3]]
    items = B.make_extra("gsm8k", SHARED_DATA / "gsm8k" / "test.jsonl", limit=2, training=[recs[0]["question"]])
    assert [it.id for it in items] == ["gsm8k-1", "gsm8k-2"]  # record 0 is in "training"
    for it, rec in zip(items, recs[1:]):
        assert it.split == "gsm8k" and it.transcript == speakable(rec["question"])
        assert it.answer == rec["answer"].split("#### ")[-1].replace(",", "").strip()
        assert it.seconds > 1.0
    sv = B.make_extra("svamp", SHARED_DATA / "svamp" / "SVAMP.json", limit=1)
    first = json.loads((SHARED_DATA / "svamp" / "SVAMP.json").read_text())[0]
    assert sv[0].answer == normalize_answer(str(first["Answer"]))  # 51.0 -> "51"
    assert sv[0].transcript == speakable(f"{first['Body']}, {first['Question'][0].lower()}{first['Question'][1:]}")


def test_extra_errors(tmp_path) -> None:
    with pytest.raises(BenchmarkError, match="unknown extra benchmark"):
        B.make_extra("mmlu", tmp_path / "x.jsonl")  # type: ignore[arg-type]
    with pytest.raises(BenchmarkError, match="not found"):
        B.make_extra("gsm8k", tmp_path / "x.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "What is 1 plus 1?", "answer": "2"}\n')
    with pytest.raises(BenchmarkError, match=r"record 0: needs 'question' and an 'answer' ending '#### N'"):
        B.make_extra("gsm8k", bad)
    bad.write_text('{"question": "q"}\nnot json\n')
    with pytest.raises(BenchmarkError, match="line 2 is not valid JSON"):
        B.make_extra("gsm8k", bad)
