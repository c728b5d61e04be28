"""Codec tests on espeak speech: round trip, id mapping, streaming, storage, Mimi wrapper.

    .venv/bin/python -m pytest tests/test_codec.py -q
"""

from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest

from models.codec import CodecError, MimiCodec, StreamParams, WorldCodec, load_codec
from models.omni import TinyDims, codec_ids
from models.wave import resample

SENTENCES = [
    "Tom has three apples and buys twelve more.",
    "How many apples does he have now?",
    "A train travels sixty miles in two hours.",
    "What is its average speed in miles per hour?",
    "Sara saves five dollars every week for a year.",
    "The answer is forty two.",
    "She gives half of her cookies to her brother.",
    "Each box holds eight pencils and there are nine boxes.",
]

_ESPEAK: dict = {}


def speak(text: str) -> np.ndarray:
    """16 kHz float32 speech: models.tts when it exists, else libespeak-ng through ctypes."""
    try:
        from models.tts import EspeakTTS
    except ImportError:
        EspeakTTS = None
    if EspeakTTS is not None:
        wave, sr = EspeakTTS().synthesize(text)
        return resample(wave, sr, 16000)
    import espeakng_loader

    if not _ESPEAK:
        lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
        cb_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        buf: list[np.ndarray] = []

        def collect(wav, n, _events):
            if n > 0:
                buf.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        cb = cb_type(collect)
        sr = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)  # 2: synchronous
        assert sr > 0, "espeak_Initialize failed"
        lib.espeak_SetSynthCallback(cb)
        lib.espeak_SetVoiceByName(b"en")
        _ESPEAK.update(lib=lib, cb=cb, buf=buf, sr=sr)
    lib, buf = _ESPEAK["lib"], _ESPEAK["buf"]
    buf.clear()
    t = text.encode() + b"\0"
    lib.espeak_Synth(t, len(t), 0, 0, 0, 0, None, None)
    lib.espeak_Synchronize()
    return resample(np.concatenate(buf).astype(np.float32) / 32768.0, _ESPEAK["sr"], 16000)


@pytest.fixture(scope="module")
def waves() -> list[np.ndarray]:
    return [speak(s) for s in SENTENCES]


@pytest.fixture(scope="module")
def codec(waves) -> WorldCodec:
    # Default sizes (the ones the tiny pipeline uses); fewer k-means iterations keep the test fast.
    return WorldCodec.fit(waves[:-1], 16000, seed=0, iters=8)


def _log_spec(x: np.ndarray) -> np.ndarray:
    from scipy.signal import stft

    return np.log(np.abs(stft(x, 16000, nperseg=512, noverlap=352)[2]) ** 2 + 1e-6)


def _median_f0(x: np.ndarray) -> float:
    from models.codec import _pyworld

    pw = _pyworld()
    f0, _ = pw.dio(x.astype(np.float64), 16000, f0_floor=60, f0_ceil=500, frame_period=10)
    return float(np.median(f0[f0 > 0]))


def test_vocab_fits_tiny_talker(codec):
    assert codec.codebooks == 4 and codec.frame_rate == 50
    assert codec.vocab_size <= codec_ids(TinyDims().talker_vocab_size)["tts_codec_pad_token_id"]


def test_round_trip_is_speech_of_same_length(codec, waves):
    w = waves[-1]  # held out from fitting
    codes = codec.encode(w, 16000)
    assert codes.shape[1] == codec.codebooks
    assert abs(len(codes) - len(w) / codec.hop) <= 2
    assert (codes >= 0).all() and (codes < np.asarray(codec.codebook_sizes)).all()
    y = codec.decode(codes)
    assert y.dtype == np.float32 and len(y) == len(codes) * codec.hop
    assert abs(len(y) - len(w)) <= 2 * codec.hop
    assert np.sqrt(np.mean(y**2)) > 0.2 * np.sqrt(np.mean(w**2))
    n = min(len(y), len(w))
    a, b = _log_spec(w[:n]), _log_spec(y[:n])
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.7  # same spectro-temporal shape as the input
    assert abs(_median_f0(y) / _median_f0(w) - 1) < 0.1  # pitch survives its own token


def test_encode_other_sample_rate(codec, waves):
    w24 = resample(waves[0], 16000, 24000)
    a, b = codec.encode(waves[0], 16000), codec.encode(w24, 24000)
    assert abs(len(a) - len(b)) <= 1
    assert np.mean(a[: min(len(a), len(b)), 0] == b[: min(len(a), len(b)), 0]) > 0.8


def test_flatten_unflatten(codec, waves):
    codes = codec.encode(waves[1], 16000)
    ids = codec.flatten(codes)
    assert len(ids) == codes.size and 0 <= min(ids) and max(ids) < codec.vocab_size
    # Frame t, codebook k sits at t*n + k with offset offsets[k].
    assert ids[codec.codebooks + 1] == codes[1, 1] + codec.codebook_sizes[0]
    np.testing.assert_array_equal(codec.unflatten(ids), codes)
    with pytest.raises(CodecError, match="whole number"):
        codec.unflatten(ids[:-1])
    np.testing.assert_array_equal(codec.unflatten(ids[:-1], strict=False), codes[:-1])
    swapped = [ids[1], ids[0], *ids[2:]]  # an envelope id in the f0 slot
    with pytest.raises(CodecError, match="codebook-0"):
        codec.unflatten(swapped)
    with pytest.raises(CodecError, match="outside"):
        codec.flatten(codes + 10_000)


def test_stream_equals_decode(codec, waves):
    codes = codec.encode(waves[2], 16000)
    whole = codec.decode(codes)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, len(codes)), size=12, replace=False))
    pieces = np.split(codes, cuts)  # uneven pieces, as a talker would hand them over
    chunks = list(codec.decode_stream(iter(pieces)))
    streamed = np.concatenate(chunks)
    assert len(streamed) == len(whole)
    np.testing.assert_allclose(streamed, whole, atol=1e-6)
    assert len(chunks) > 2


def test_stream_latency_is_first_block_plus_lookahead(codec, waves):
    codes = codec.encode(waves[3], 16000)
    p = codec.stream
    assert p.first_frames == p.first_block_frames + p.lookahead_frames <= 10  # <= 40 talker steps at 4 ids/frame
    dec = codec.stream_decoder()
    assert len(dec.push(codes[: p.first_frames - 1])) == 0
    first = dec.push(codes[p.first_frames - 1 : p.first_frames])
    assert len(first) == p.first_block_frames * codec.hop
    whole = codec.decode(codes)
    np.testing.assert_allclose(first, whole[: len(first)], atol=1e-6)
    # Every later block needs block_frames more frames, and the blocks are no longer than the first.
    assert p.block_frames <= p.first_block_frames
    assert len(dec.push(codes[p.first_frames : p.first_frames + p.block_frames - 1])) == 0
    second = dec.push(codes[p.first_frames + p.block_frames - 1 : p.first_frames + p.block_frames])
    assert len(second) == p.block_frames * codec.hop
    np.testing.assert_allclose(second, whole[len(first) : len(first) + len(second)], atol=1e-6)


def test_block_decode_close_to_one_shot_synthesis(codec, waves):
    codes = codec.encode(waves[-1], 16000)
    blocks, whole = codec.decode(codes), codec.synthesize_whole(codes)
    assert len(blocks) == len(whole)
    # Pulse phase restarts per block, so compare spectra, not samples.
    assert np.corrcoef(_log_spec(blocks).ravel(), _log_spec(whole).ravel())[0, 1] > 0.85


def test_save_load_identical(codec, waves, tmp_path):
    (tmp_path / "codec").mkdir()
    (tmp_path / "codec" / "stale.bin").write_bytes(b"old")  # save replaces the directory whole
    codec.save(tmp_path / "codec")
    assert sorted(os.listdir(tmp_path / "codec")) == ["codec.json", "codec.npz"]
    assert os.listdir(tmp_path) == ["codec"]  # no temp files or directories left
    back = load_codec(f"world:{tmp_path / 'codec'}")
    a, b = codec.encode(waves[4], 16000), back.encode(waves[4], 16000)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(codec.decode(a), back.decode(b))


def test_save_keeps_old_codec_when_interrupted(codec, tmp_path, monkeypatch):
    """A save that dies half-way leaves the previous codec loadable (MimiCodec.save used to delete it first)."""
    codec.save(tmp_path / "codec")
    before = (tmp_path / "codec" / "codec.npz").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        codec.save(tmp_path / "codec")
    assert (tmp_path / "codec" / "codec.npz").read_bytes() == before
    assert os.listdir(tmp_path) == ["codec"]
    load_codec(f"world:{tmp_path / 'codec'}")


def test_old_stream_params_load_with_todays_blocks(codec, tmp_path):
    import json

    codec.save(tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "codec.json").read_text())
    cfg["stream"] = {"block_frames": 25, "context_frames": 2, "lookahead_frames": 4, "crossfade": 240,
                     "max_shift": 80}  # as saved before the short first block
    (tmp_path / "c" / "codec.json").write_text(json.dumps(cfg))
    assert load_codec(f"world:{tmp_path / 'c'}").stream == StreamParams()


def test_fast_f0_speed_keeps_the_pitch_track_and_is_saved(codec, waves, tmp_path):
    """codec.f0_speed 4 (the default) tracks f0 on the decimated wave: the same voicing and pitch as full
    rate within a few percent, the tokens the codec stage writes survive save/load, and an old codec
    (no f0_speed in codec.json) still analyses at full rate."""
    import json

    full, fast = WorldCodec.analyser(), WorldCodec.analyser(f0_speed=4)
    for w in waves[:4]:
        f1, x1 = full.features(w, 16000)
        f4, x4 = fast.features(w, 16000)
        assert f1.shape == f4.shape and x1.shape == x4.shape
        assert np.mean((f1 > 0) == (f4 > 0)) > 0.95  # voiced / unvoiced frames agree
        both = (f1 > 0) & (f4 > 0)
        assert np.median(np.abs(np.log(f4[both] / f1[both]))) < 0.03  # pitch within 3 % (a f0 bin is ~1 %)
    fitted = WorldCodec.fit(waves[:3], 16000, codebook_size=16, n_codebooks=1, iters=3, seed=0, f0_speed=4)
    assert fitted.f0_speed == 4
    fitted.save(tmp_path / "c")
    back = load_codec(f"world:{tmp_path / 'c'}")
    assert back.f0_speed == 4
    np.testing.assert_array_equal(fitted.encode(waves[4], 16000), back.encode(waves[4], 16000))
    cfg = json.loads((tmp_path / "c" / "codec.json").read_text())
    del cfg["f0_speed"]  # as saved before the option
    (tmp_path / "c" / "codec.json").write_text(json.dumps(cfg))
    assert load_codec(f"world:{tmp_path / 'c'}").f0_speed == 1
    with pytest.raises(CodecError, match="f0_speed"):
        WorldCodec.analyser(f0_speed=0)


def test_fit_from_features_is_fit(waves):
    """The codec stage analyses the fitting clips in worker processes, then fits on their features:
    the same codec as fitting on the waves."""
    kw = {"codebook_size": 16, "n_codebooks": 2, "iters": 3, "seed": 1, "f0_speed": 4}
    a = WorldCodec.fit(waves[:3], 16000, **kw)
    probe = WorldCodec.analyser(f0_speed=4)
    b = WorldCodec.fit_features([probe.features(w, 16000) for w in waves[:3]], **kw)
    assert a.config() == b.config()
    np.testing.assert_array_equal(a.encode(waves[4], 16000), b.encode(waves[4], 16000))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="WorldCodec.fit"):
        load_codec(f"world:{tmp_path / 'nope'}")
    with pytest.raises(CodecError, match="unknown codec kind"):
        load_codec(f"lpc:{tmp_path}")
    with pytest.raises(CodecError, match="must look like"):
        load_codec("world")
    with pytest.raises(FileNotFoundError, match="hf download"):
        load_codec(f"mimi:{tmp_path / 'no-mimi'}")


def test_fit_rejects_unvoiced_audio():
    noise = np.random.default_rng(0).normal(0, 1e-4, 16000).astype(np.float32)
    with pytest.raises(CodecError, match="voiced"):
        WorldCodec.fit([noise], 16000, codebook_size=4, n_codebooks=1)


def test_mimi_wrapper_tiny_random(tmp_path, waves):
    torch = pytest.importorskip("torch")
    from transformers import MimiConfig, MimiModel

    torch.manual_seed(0)
    cfg = MimiConfig(
        sampling_rate=16000, hidden_size=32, num_filters=8, upsampling_ratios=[8, 5, 4], num_hidden_layers=1,
        intermediate_size=64, num_attention_heads=2, num_key_value_heads=2, head_dim=16, codebook_size=64,
        codebook_dim=16, num_quantizers=4, vector_quantization_hidden_dimension=16, upsample_groups=32,
    )
    MimiCodec(MimiModel(cfg), n_codebooks=3).save(tmp_path / "mimi")
    (tmp_path / "mimi" / "stale.bin").write_bytes(b"old")
    MimiCodec(MimiModel(cfg), n_codebooks=3).save(tmp_path / "mimi")  # replaces the directory whole
    assert not (tmp_path / "mimi" / "stale.bin").exists() and os.listdir(tmp_path) == ["mimi"]
    codec = load_codec(f"mimi:{tmp_path / 'mimi'}")
    assert isinstance(codec, MimiCodec) and codec.codebooks == 3 and codec.frame_rate == 50
    codes = codec.encode(waves[0], 16000)
    assert codes.shape[1] == 3 and (codes < 64).all()
    np.testing.assert_array_equal(codec.unflatten(codec.flatten(codes)), codes)
    y = codec.decode(codes)
    assert len(y) == len(codes) * codec.hop and np.isfinite(y).all()
    assert len(np.concatenate(list(codec.decode_stream(codes)))) == len(y)


def test_mimi_stream_first_audio_early_and_real_time_pace_keeps_a_frame(waves):
    """Frames arriving exactly as fast as they play (one thinker position per frame at the frame
    rate): the first chunk needs at most 4 frames at 12.5 Hz (first block + 1 lookahead), and every
    later chunk is there at least one frame before the one before it has played out."""
    pytest.importorskip("torch")
    from transformers import MimiConfig, MimiModel

    for rate, sr, ratios in ((12.5, 24000, [8, 6, 5, 4]), (50.0, 16000, [8, 5, 4])):
        cfg = MimiConfig(
            sampling_rate=sr, frame_rate=rate, hidden_size=32, num_filters=8, upsampling_ratios=ratios,
            num_hidden_layers=1, intermediate_size=64, num_attention_heads=2, num_key_value_heads=2, head_dim=16,
            codebook_size=64, codebook_dim=16, num_quantizers=4, vector_quantization_hidden_dimension=16,
            upsample_groups=32,
        )
        codec = MimiCodec(MimiModel(cfg), n_codebooks=2)
        assert codec.hop * rate == sr
        if rate == 12.5:
            assert codec.stream.first_frames <= 4
        codes = np.random.default_rng(0).integers(0, 64, (int(4 * rate), 2))
        dec = codec.stream_decoder()
        play_end, samples = None, 0  # play_end in frames
        for i in range(len(codes)):
            chunk = dec.push(codes[i : i + 1])
            samples += len(chunk)
            if not len(chunk):
                continue
            arrived = i + 1  # frames received so far = time in frames
            if play_end is None:
                assert arrived <= codec.stream.first_frames
                play_end = arrived
            else:
                assert arrived <= play_end - 1, f"chunk at frame {arrived}, previous audio ends at {play_end}"
            play_end += len(chunk) / codec.hop
        assert play_end is not None
        assert samples + len(dec.flush()) == len(codes) * codec.hop


def test_the_codec_stage_in_worker_processes_writes_what_one_process_does(tmp_path, caplog):
    """tasks/codec.py analyses the fitting clips and encodes every response in a process pool: the codec and
    the codes are the ones a single process makes; both say how far they are (a line at the end at least)."""
    import logging

    import pyarrow.parquet as pq
    from audio_data import tiny_setup

    import tasks.codec as stage

    t = tiny_setup()
    with caplog.at_level(logging.INFO, logger="codec"):
        one = stage.run(t.p, t.data, tmp_path / "one", workers=1)
        two = stage.run(t.p, t.data, tmp_path / "two", workers=2)
    n = one["codec/encoded_clips"]
    done = [r.getMessage() for r in caplog.records if f"clips encoded {n}/{n}" in r.getMessage()]
    assert len(done) == 2, [r.getMessage() for r in caplog.records]
    assert one["codec/encoded_clips"] == two["codec/encoded_clips"] > 0
    assert (tmp_path / "one" / "codec.json").read_text() == (tmp_path / "two" / "codec.json").read_text()
    assert pq.read_table(tmp_path / "one" / "codes.parquet").equals(pq.read_table(tmp_path / "two" / "codes.parquet"))
    assert one["codec/fit_clips"] == min(t.p.codec.fit_clips, one["codec/encoded_clips"])
