"""Speech codecs whose tokens the talker predicts, and their streaming decoder.

Qwen2.5-Omni's own codec encoder is not public, so the talker learns the tokens of a codec we can
both encode (to make targets) and decode (to speak). Two implementations share one interface:

- ``WorldCodec`` (default, offline, fit in seconds): WORLD vocoder features from ``pyworld`` at 50
  frames/s. Per frame: one log-f0 token (0 = unvoiced) and a residual VQ (k-means, numpy) over the
  40-d coded spectral envelope + coded aperiodicity. Decoded with ``pyworld.synthesize``.
- ``MimiCodec``: transformers' ``MimiModel`` from a *local* checkpoint directory (nothing is
  downloaded).

Multi-codebook frames ``(T, n_codebooks)`` map to the talker's single token stream by interleaving
the codebooks of each frame, each shifted by its own id offset (``flatten`` / ``unflatten``).

Streaming: ``decode_stream`` (or ``StreamDecoder.push``) synthesises blocks of frames (a short first
block of 6 frames, then 5; ``StreamParams``), each with a little left context and a lookahead
(4 frames, 80 ms), and joins blocks with a short crossfade after shifting
the new block by up to ``max_shift`` samples to line its pitch pulses up with the previous block
(WSOLA-style; WORLD restarts pulse phase in every segment). ``WorldCodec.decode`` runs that same
block decoder over all frames, so what a client hears streamed equals what offline evaluation hears.

    codec = WorldCodec.fit(waves, sr=16000)        # list of float32 mono arrays
    codes = codec.encode(wave, sr)                 # (T, 4) int
    ids = codec.flatten(codes)                     # talker token ids, all < codec.vocab_size
    wave = codec.decode(codec.unflatten(ids))      # float32 at codec.sample_rate
    for chunk in codec.decode_stream(codes): ...   # 120 ms, then 100 ms chunks; 80 ms lookahead
    codec.save("out/codec"); codec = load_codec("world:out/codec")

Run ``python -m bench.bench_codec`` for real-time factors.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from models.atomic import atomic_dir
from models.wave import resample

FORMAT_VERSION = 1


class CodecError(ValueError):
    """Bad codec input or a codec directory that cannot be used (the message says what to do)."""


def _pyworld():
    """Import pyworld; <=0.3.5 imports ``pkg_resources``, which setuptools>=81 no longer ships."""
    try:
        return importlib.import_module("pyworld")
    except ModuleNotFoundError as e:
        if e.name != "pkg_resources":
            raise
    from importlib.metadata import version

    shim = types.ModuleType("pkg_resources")
    shim.get_distribution = lambda name: types.SimpleNamespace(version=version(name))  # the one call it makes
    sys.modules["pkg_resources"] = shim
    try:
        return importlib.import_module("pyworld")
    finally:
        if sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]


# --------------------------------------------------------------------------------------------------
# Interface and the shared streaming decoder
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamParams:
    """How the block decoder cuts frames: sizes in frames, crossfade and shift in samples.

    The first block is short so the first audio comes early: it needs ``first_block_frames +
    lookahead_frames`` frames (10 at 50 frames/s: 200 ms of codes). Later blocks are no longer than
    the first: a talker that makes frames exactly as fast as they play (one thinker position per
    frame at 50 tokens/s) then delivers every block before the previous ones have played, with
    ``(first_block_frames - block_frames)`` frames to spare.
    """

    block_frames: int = 5  # 100 ms at 50 frames/s: one emitted chunk after the first
    first_block_frames: int = 6  # 120 ms: the first chunk
    context_frames: int = 2  # left context synthesised (and dropped) before each block
    lookahead_frames: int = 4  # 80 ms at 50 frames/s: frames after a block needed to emit it
    crossfade: int = 240  # samples (15 ms at 16 kHz)
    max_shift: int = 80  # samples a block may move to line its pulses up with the previous one

    def check(self, hop: int) -> None:
        if min(self.block_frames, self.first_block_frames, self.lookahead_frames) < 1 or self.context_frames < 0:
            raise CodecError(
                f"bad stream params {self}: need block_frames, first_block_frames, lookahead_frames >= 1"
            )
        if self.max_shift > self.context_frames * hop:
            raise CodecError(f"max_shift={self.max_shift} needs context_frames*hop >= max_shift (hop={hop})")
        if self.crossfade + self.max_shift > (self.lookahead_frames - 1) * hop + hop // 2 or self.crossfade < 1:
            raise CodecError(
                f"crossfade={self.crossfade} + max_shift={self.max_shift} does not fit in the lookahead of "
                f"{self.lookahead_frames} frames (hop={hop}); raise lookahead_frames or lower them"
            )
        if min(self.block_frames, self.first_block_frames) * hop < self.crossfade:
            raise CodecError(f"blocks of {min(self.block_frames, self.first_block_frames)} frames are shorter "
                             f"than the crossfade ({self.crossfade} samples); use longer blocks")

    def bounds(self, k: int) -> tuple[int, int]:
        """Frames ``[start, end)`` of block ``k``."""
        if k == 0:
            return 0, self.first_block_frames
        start = self.first_block_frames + (k - 1) * self.block_frames
        return start, start + self.block_frames

    @property
    def first_frames(self) -> int:
        """Frames needed before the first block decodes (its frames plus the lookahead)."""
        return self.first_block_frames + self.lookahead_frames


class Codec(ABC):
    """A speech codec: waves <-> integer frames ``(T, codebooks)``, plus the talker's flat id stream."""

    kind: str = ""
    sample_rate: int
    frame_rate: float
    codebook_sizes: tuple[int, ...]
    stream: StreamParams

    @property
    def codebooks(self) -> int:
        return len(self.codebook_sizes)

    @property
    def hop(self) -> int:
        """Samples per frame at ``sample_rate``."""
        return int(round(self.sample_rate / self.frame_rate))

    @property
    def vocab_size(self) -> int:
        """Number of talker token ids the codec uses: ids are ``0 .. vocab_size-1``."""
        return int(sum(self.codebook_sizes))

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.codebook_sizes)[:-1]]).astype(np.int64)

    @property
    def tokens_per_second(self) -> float:
        return self.frame_rate * self.codebooks

    @abstractmethod
    def encode(self, wave: np.ndarray, sr: int) -> np.ndarray:
        """Mono wave at ``sr`` -> codes ``(T, codebooks)`` int64, column k in ``[0, codebook_sizes[k])``."""

    @abstractmethod
    def _synthesize(self, codes: np.ndarray) -> np.ndarray:
        """Non-streaming synthesis of a slice of frames; about ``len(codes) * hop`` samples."""

    @abstractmethod
    def save(self, out_dir: str | Path) -> None:
        """Write the codec to ``out_dir``, replacing the directory atomically, so that ``load_codec``
        can read it back."""

    def check_codes(self, codes: np.ndarray) -> np.ndarray:
        c = np.asarray(codes)
        if c.ndim != 2 or c.shape[1] != self.codebooks:
            raise CodecError(f"codes must have shape (T, {self.codebooks}), got {c.shape}")
        if not np.issubdtype(c.dtype, np.integer):
            raise CodecError(f"codes must be integers, got dtype {c.dtype}")
        sizes = np.asarray(self.codebook_sizes)
        if c.size and ((c < 0).any() or (c >= sizes).any()):
            bad = int(np.argwhere((c < 0) | (c >= sizes))[0][1])
            raise CodecError(f"codebook {bad} holds ids outside [0, {sizes[bad]}); were ids flattened twice?")
        return c.astype(np.int64, copy=False)

    def flatten(self, codes: np.ndarray) -> list[int]:
        """``(T, n)`` codes -> ``T*n`` talker ids, frame by frame, codebook k shifted by ``offsets[k]``."""
        c = self.check_codes(codes)
        return (c + self.offsets).reshape(-1).tolist()

    def unflatten(self, ids: Sequence[int], strict: bool = True) -> np.ndarray:
        """Inverse of ``flatten``. ``strict=False`` drops an incomplete last frame (a cut-off generation)."""
        a = np.asarray(list(ids), dtype=np.int64)
        n = self.codebooks
        if len(a) % n:
            if strict:
                raise CodecError(
                    f"{len(a)} ids is not a whole number of {n}-codebook frames; pass strict=False to drop "
                    "the incomplete last frame"
                )
            a = a[: len(a) - len(a) % n]
        codes = a.reshape(-1, n) - self.offsets
        sizes = np.asarray(self.codebook_sizes)
        bad = (codes < 0) | (codes >= sizes)
        if bad.any():
            t, k = (int(v) for v in np.argwhere(bad)[0])
            raise CodecError(
                f"id {a[t * n + k]} at frame {t} is not a codebook-{k} id (range [{self.offsets[k]}, "
                f"{self.offsets[k] + sizes[k]})); constrain generation with models.talker.codebook_mask"
            )
        return codes

    def stream_decoder(self) -> "StreamDecoder":
        """Fresh per-request streaming state."""
        return StreamDecoder(self)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes ``(T, codebooks)`` -> float32 wave of ``T * hop`` samples at ``sample_rate``.

        The same block decoder as ``decode_stream``, run over all frames: the two agree exactly.
        """
        dec = self.stream_decoder()
        parts = [dec.push(codes), dec.flush()]
        return np.concatenate(parts).astype(np.float32)

    def decode_stream(self, codes: np.ndarray | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Yield wave chunks as frames arrive; ``codes`` is a whole ``(T, n)`` array or an iterable of
        ``(t, n)`` pieces (e.g. from the talker). Concatenated chunks equal ``decode(all codes)``."""
        if isinstance(codes, np.ndarray):
            whole, step = codes, self.stream.block_frames
            codes = (whole[i : i + step] for i in range(0, len(whole), step))  # any cut gives the same audio
        dec = self.stream_decoder()
        for piece in codes:
            out = dec.push(piece)
            if len(out):
                yield out
        out = dec.flush()
        if len(out):
            yield out


@dataclass
class StreamDecoder:
    """Streaming state of one request: buffered frames, next block, and the previous block's tail.

    ``push(codes)`` returns the samples that became final (whole blocks once their lookahead has
    arrived); ``flush()`` returns the rest at the end of the utterance.
    """

    codec: Codec
    frames: list[np.ndarray] = field(default_factory=list)
    n_frames: int = 0
    next_block: int = 0
    tail: np.ndarray | None = None
    finished: bool = False

    def push(self, codes: np.ndarray) -> np.ndarray:
        if self.finished:
            raise CodecError("this stream was flushed; start a new one with codec.stream_decoder()")
        c = self.codec.check_codes(np.asarray(codes).reshape(-1, self.codec.codebooks))
        if len(c):
            self.frames.append(c)
            self.n_frames += len(c)
        return self._emit(final=False)

    def flush(self) -> np.ndarray:
        out = self._emit(final=True)
        self.finished = True
        return out

    def _emit(self, final: bool) -> np.ndarray:
        p = self.codec.stream
        hop = self.codec.hop
        out: list[np.ndarray] = []
        all_codes = np.concatenate(self.frames) if self.frames else np.zeros((0, self.codec.codebooks), np.int64)
        self.frames = [all_codes] if len(all_codes) else []
        n = self.n_frames
        while True:
            start, full_end = p.bounds(self.next_block)
            if start >= n or (not final and n < full_end + p.lookahead_frames):
                break
            end = min(full_end, n)
            last = end == n  # only reachable when final: otherwise lookahead frames follow the block
            a = max(0, start - p.context_frames)
            b = min(n, full_end + p.lookahead_frames)
            seg = self.codec._synthesize(all_codes[a:b]).astype(np.float64)
            length = (end - start) * hop
            o = (start - a) * hop
            need = o + p.max_shift + length + p.crossfade
            if len(seg) < need:  # segment edges: synthesis may come up a few samples short
                seg = np.pad(seg, (0, need - len(seg)))
            if self.tail is None:
                block = seg[o : o + length]
            else:
                shift = _best_shift(seg, o, self.tail, p.max_shift)
                head = seg[o + shift : o + shift + length]
                x = len(self.tail)
                fade = np.linspace(0.0, 1.0, x + 2)[1:-1]
                block = head.copy()
                block[:x] = self.tail * (1 - fade) + head[:x] * fade
                o += shift
            self.tail = None if last else seg[o + length : o + length + p.crossfade]
            out.append(block)
            self.next_block += 1
        if not out:
            return np.zeros(0, np.float32)
        return np.concatenate(out).astype(np.float32)


def _best_shift(seg: np.ndarray, o: int, tail: np.ndarray, max_shift: int) -> int:
    """Shift in [-max_shift, max_shift] whose window of ``seg`` best matches ``tail`` (normalised xcorr)."""
    x = len(tail)
    back = min(max_shift, o)  # a block at the very start has no context to move back into
    if max_shift == 0 or not np.any(tail):
        return 0
    win = seg[o - back : o + max_shift + x]
    corr = np.correlate(win, tail, mode="valid")  # (back + max_shift + 1,)
    energy = np.convolve(win**2, np.ones(x), mode="valid")
    score = corr / np.sqrt(energy + 1e-12)
    return int(np.argmax(score)) - back


# --------------------------------------------------------------------------------------------------
# WORLD codec
# --------------------------------------------------------------------------------------------------


def kmeans(x: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding on rows of ``x`` -> centroids ``(k, d)``."""
    n = len(x)
    if n < k:
        raise CodecError(f"k-means needs at least {k} frames, got {n}; fit on more audio or lower codebook_size")
    x2 = (x**2).sum(1)
    cents = np.empty((k, x.shape[1]), x.dtype)
    cents[0] = x[rng.integers(n)]
    d = ((x - cents[0]) ** 2).sum(1)
    for i in range(1, k):
        cents[i] = x[rng.choice(n, p=d / d.sum()) if d.sum() > 0 else rng.integers(n)]
        d = np.minimum(d, ((x - cents[i]) ** 2).sum(1))
    for _ in range(iters):
        assign = _nearest(x, x2, cents)
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(cents)
        np.add.at(sums, assign, x)
        empty = counts == 0
        cents[~empty] = sums[~empty] / counts[~empty, None]
        if empty.any():  # reseed dead centroids on random frames so every id stays usable
            cents[empty] = x[rng.integers(n, size=int(empty.sum()))]
    return cents


def _nearest(x: np.ndarray, x2: np.ndarray | None, cents: np.ndarray) -> np.ndarray:
    if x2 is None:
        x2 = (x**2).sum(1)
    d = x2[:, None] - 2 * x @ cents.T + (cents**2).sum(1)[None, :]
    return d.argmin(1)


_FIT_SETTINGS = ("codebook_size", "n_codebooks", "f0_bins", "seed", "max_frames", "iters")  # fit_features' own


class WorldCodec(Codec):
    """WORLD vocoder features, quantised: token 0 is log-f0, tokens 1.. are an RVQ of the envelope."""

    kind = "world"

    def __init__(
        self,
        f0_range: tuple[float, float],
        mean: np.ndarray,
        std: np.ndarray,
        codebooks_rvq: list[np.ndarray],
        f0_bins: int = 256,
        sample_rate: int = 16000,
        frame_rate: float = 50.0,
        n_mcep: int = 40,
        f0_floor: float = 60.0,
        f0_ceil: float = 500.0,
        stream: StreamParams = StreamParams(),
        f0_speed: int = 1,
    ) -> None:
        self.sample_rate = int(sample_rate)
        if not 1 <= int(f0_speed) <= 12:
            raise CodecError(f"f0_speed must be 1..12 (pyworld dio's decimation), got {f0_speed}")
        self.f0_speed = int(f0_speed)  # dio analyses the wave decimated by this: 4 is ~3.5x faster f0 tracking
        self.frame_rate = float(frame_rate)
        self.n_mcep = int(n_mcep)
        self.f0_floor, self.f0_ceil = float(f0_floor), float(f0_ceil)
        self.f0_range = (float(f0_range[0]), float(f0_range[1]))  # log-f0 span of the voiced bins
        self.f0_bins = int(f0_bins)
        self.mean = np.asarray(mean, np.float64)
        self.std = np.asarray(std, np.float64)
        self.rvq = [np.asarray(c, np.float64) for c in codebooks_rvq]
        self.codebook_sizes = (self.f0_bins, *(len(c) for c in self.rvq))
        self.stream = stream
        self.stream.check(self.hop)
        pw = _pyworld()
        self._pw = pw
        self.fft_size = pw.get_cheaptrick_fft_size(self.sample_rate, self.f0_floor)

    # -- analysis -------------------------------------------------------------------------------
    @property
    def frame_period(self) -> float:
        return 1000.0 / self.frame_rate

    def features(self, wave: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """Wave -> (f0 ``(T,)`` Hz with 0 = unvoiced, features ``(T, n_mcep + n_ap)``)."""
        pw = self._pw
        x = resample(wave, sr, self.sample_rate).astype(np.float64)
        if len(x) < self.hop:
            raise CodecError(f"wave of {len(x)} samples is shorter than one codec frame ({self.hop})")
        fs = self.sample_rate
        f0, t = pw.dio(x, fs, f0_floor=self.f0_floor, f0_ceil=self.f0_ceil, frame_period=self.frame_period,
                       speed=self.f0_speed)
        f0 = pw.stonemask(x, f0, t, fs)
        sp = pw.cheaptrick(x, f0, t, fs, f0_floor=self.f0_floor, fft_size=self.fft_size)
        ap = pw.d4c(x, f0, t, fs, fft_size=self.fft_size)
        feats = np.concatenate([pw.code_spectral_envelope(sp, fs, self.n_mcep), pw.code_aperiodicity(ap, fs)], 1)
        return f0, feats

    def _f0_tokens(self, f0: np.ndarray) -> np.ndarray:
        lo, hi = self.f0_range
        nb = self.f0_bins - 1
        tok = np.zeros(len(f0), np.int64)
        v = f0 > 0
        idx = np.floor((np.log(f0[v]) - lo) / (hi - lo) * nb).astype(np.int64)
        tok[v] = 1 + np.clip(idx, 0, nb - 1)
        return tok

    def _f0_values(self, tok: np.ndarray) -> np.ndarray:
        lo, hi = self.f0_range
        nb = self.f0_bins - 1
        f0 = np.exp(lo + (tok - 0.5) / nb * (hi - lo))  # bin centres (tok is 1-based)
        return np.where(tok > 0, f0, 0.0)

    def _quantize(self, z: np.ndarray) -> np.ndarray:
        out = np.zeros((len(z), len(self.rvq)), np.int64)
        r = z.copy()
        for i, cb in enumerate(self.rvq):
            out[:, i] = _nearest(r, None, cb)
            r -= cb[out[:, i]]
        return out

    def encode(self, wave: np.ndarray, sr: int) -> np.ndarray:
        f0, feats = self.features(wave, sr)
        z = (feats - self.mean) / self.std
        return np.concatenate([self._f0_tokens(f0)[:, None], self._quantize(z)], 1)

    # -- synthesis -----------------------------------------------------------------------------
    def _synthesize(self, codes: np.ndarray) -> np.ndarray:
        pw = self._pw
        fs = self.sample_rate
        if len(codes) == 0:
            return np.zeros(0)
        z = sum(cb[codes[:, i + 1]] for i, cb in enumerate(self.rvq))
        feats = z * self.std + self.mean
        sp = pw.decode_spectral_envelope(np.ascontiguousarray(feats[:, : self.n_mcep]), fs, self.fft_size)
        ap = pw.decode_aperiodicity(np.ascontiguousarray(feats[:, self.n_mcep :]), fs, self.fft_size)
        f0 = self._f0_values(codes[:, 0])
        return pw.synthesize(f0, sp, ap, fs, self.frame_period)

    def synthesize_whole(self, codes: np.ndarray) -> np.ndarray:
        """One-shot WORLD synthesis of all frames (no blocks): a reference for the block decoder."""
        c = self.check_codes(codes)
        y = self._synthesize(c)
        n = len(c) * self.hop
        return np.pad(y, (0, max(0, n - len(y))))[:n].astype(np.float32)

    # -- fitting and storage --------------------------------------------------------------------
    @classmethod
    def fit(cls, waves: Sequence[np.ndarray], sr: int = 16000, **kwargs) -> "WorldCodec":
        """Fit normalisation, the f0 range and the RVQ codebooks on ``waves`` (mono arrays at ``sr``).
        ``kwargs``: ``fit_features``' settings and the constructor's (``f0_speed``, ``frame_rate``, ...).

        The defaults give 4 tokens per frame (200 tokens/s) and a vocabulary of 1024 ids, which fits
        the tiny talker (1036 codec ids). k-means sees at most ``max_frames`` frames, so ~30 short clips
        fit in a few seconds on a CPU.
        """
        if not waves:
            raise CodecError("WorldCodec.fit needs at least one wave")
        probe = cls.analyser(**{k: v for k, v in kwargs.items() if k not in _FIT_SETTINGS})
        return cls.fit_features([probe.features(w, sr) for w in waves], **kwargs)

    @classmethod
    def analyser(cls, **kwargs) -> "WorldCodec":
        """A codec with no codebooks yet, for its ``features`` only (e.g. in worker processes that
        analyse the fitting clips for ``fit_features``); ``kwargs`` as the constructor's."""
        return cls((0.0, 1.0), np.zeros(1), np.ones(1), [], **kwargs)

    @classmethod
    def fit_features(
        cls,
        analyses: Sequence[tuple[np.ndarray, np.ndarray]],
        codebook_size: int = 256,
        n_codebooks: int = 3,
        f0_bins: int = 256,
        seed: int = 0,
        max_frames: int = 20000,
        iters: int = 20,
        **kwargs,
    ) -> "WorldCodec":
        """``fit`` from clips already analysed: ``analyses`` is ``features(wave, sr)`` of each, made by an
        ``analyser`` with the same ``kwargs``."""
        if not analyses:
            raise CodecError("WorldCodec.fit needs at least one wave")
        if codebook_size < 2 or n_codebooks < 1 or f0_bins < 3:
            raise CodecError("need codebook_size >= 2, n_codebooks >= 1 and f0_bins >= 3")
        rng = np.random.default_rng(seed)
        f0s, feats = zip(*analyses)
        f0 = np.concatenate(f0s)
        x = np.concatenate(feats)
        voiced = np.log(f0[f0 > 0])
        if len(voiced) < 10:
            raise CodecError("the fitting audio has (almost) no voiced frames; fit on speech, not noise or silence")
        lo, hi = np.percentile(voiced, [0.5, 99.5])
        margin = 0.1 * (hi - lo) + 0.05
        mean = x.mean(0)
        std = x.std(0) + 1e-5
        z = (x - mean) / std
        if len(z) > max_frames:
            z = z[rng.choice(len(z), max_frames, replace=False)]
        books = []
        r = z.copy()
        for _ in range(n_codebooks):
            cb = kmeans(r, codebook_size, iters, rng)
            r -= cb[_nearest(r, None, cb)]
            books.append(cb)
        return cls((lo - margin, hi + margin), mean, std, books, f0_bins=f0_bins, **kwargs)

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "format_version": FORMAT_VERSION,
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "n_mcep": self.n_mcep,
            "f0_floor": self.f0_floor,
            "f0_ceil": self.f0_ceil,
            "f0_speed": self.f0_speed,
            "f0_bins": self.f0_bins,
            "f0_range": list(self.f0_range),
            "codebook_sizes": list(self.codebook_sizes),
            "stream": asdict(self.stream),
        }

    def save(self, out_dir: str | Path) -> None:
        arrays = {"mean": self.mean, "std": self.std, **{f"rvq{i}": cb for i, cb in enumerate(self.rvq)}}
        with atomic_dir(out_dir) as tmp:  # replaces out_dir whole: a kill leaves the old codec or the new
            with open(tmp / "codec.npz", "wb") as f:
                np.savez(f, **arrays)
            (tmp / "codec.json").write_text(json.dumps(self.config(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "WorldCodec":
        p = Path(path)
        cfg, npz = p / "codec.json", p / "codec.npz"
        if not cfg.exists() or not npz.exists():
            raise FileNotFoundError(
                f"no WORLD codec at {p} (needs codec.json and codec.npz); fit one with "
                "WorldCodec.fit(...).save(dir) or run the stage that builds it"
            )
        c = json.loads(cfg.read_text())
        if c.get("kind") != cls.kind or c.get("format_version") != FORMAT_VERSION:
            raise CodecError(
                f"{cfg} holds kind={c.get('kind')!r} version={c.get('format_version')}, expected "
                f"{cls.kind!r} version {FORMAT_VERSION}; refit the codec"
            )
        with np.load(npz) as z:
            books = [z[f"rvq{i}"] for i in range(len(c["codebook_sizes"]) - 1)]
            mean, std = z["mean"], z["std"]
        return cls(
            tuple(c["f0_range"]),
            mean,
            std,
            books,
            f0_bins=c["f0_bins"],
            sample_rate=c["sample_rate"],
            frame_rate=c["frame_rate"],
            n_mcep=c["n_mcep"],
            f0_floor=c["f0_floor"],
            f0_ceil=c["f0_ceil"],
            # Stream params are a decoding setting, not fitted. A codec saved before the short first
            # block holds 25-frame blocks, which would starve playback at 50 tokens/s: decode it
            # with today's blocks.
            stream=StreamParams(**c["stream"]) if "first_block_frames" in c["stream"] else StreamParams(),
            f0_speed=c.get("f0_speed", 1),  # codecs saved before it analysed at full rate
        )


# --------------------------------------------------------------------------------------------------
# Mimi (pretrained neural codec, local checkpoint only)
# --------------------------------------------------------------------------------------------------


class MimiCodec(Codec):
    """transformers' ``MimiModel`` behind the ``Codec`` interface; ``n_codebooks`` of its quantizers.

    ``decode`` is Mimi's whole-sequence decode; ``decode_stream`` runs the shared block decoder with
    a longer left context (Mimi's convolutions and attention look back) and no pulse alignment, so
    streamed audio approximates ``decode`` rather than equalling it.
    """

    kind = "mimi"

    def __init__(self, model, n_codebooks: int | None = None, path: str | None = None) -> None:
        cfg = model.config
        self.model = model.eval()
        self.path = path
        self.sample_rate = int(cfg.sampling_rate)
        self.frame_rate = float(cfg.frame_rate)
        n = int(n_codebooks or cfg.num_quantizers)
        if not 1 <= n <= cfg.num_quantizers:
            raise CodecError(f"n_codebooks={n} must be in [1, {cfg.num_quantizers}] for this Mimi checkpoint")
        self.codebook_sizes = (int(cfg.codebook_size),) * n
        # Mimi is causal (Moshi decodes it frame by frame), so one frame of lookahead is enough. Blocks
        # of 160 ms (2 frames at 12.5 Hz) after a first block one frame longer: the first audio
        # needs 4 frames (32 talker steps with 8 codebooks) past the first response position, and a
        # talker making frames exactly as fast as they play keeps one frame (80 ms) to spare. Each
        # block re-decodes 1 s of left context.
        block = max(1, int(round(0.16 * self.frame_rate)))
        self.stream = StreamParams(
            block_frames=block,
            first_block_frames=block + max(1, int(round(0.08 * self.frame_rate))),
            context_frames=max(2, int(round(self.frame_rate))),
            lookahead_frames=1,
            crossfade=min(self.hop // 2, int(0.01 * self.sample_rate)),
            max_shift=0,
        )
        self.stream.check(self.hop)

    @classmethod
    def load(cls, path: str | Path, n_codebooks: int | None = None) -> "MimiCodec":
        p = Path(path).expanduser()
        if not (p / "config.json").exists():
            raise FileNotFoundError(
                f"no Mimi checkpoint at {p} (no config.json). Offline only a local copy works: on a machine "
                f"with network run `hf download kyutai/mimi --local-dir {p}` and copy the folder here"
            )
        from transformers import MimiModel

        model = MimiModel.from_pretrained(str(p), local_files_only=True, use_kernels=False)
        return cls(model, n_codebooks, str(p))

    def encode(self, wave: np.ndarray, sr: int) -> np.ndarray:
        import torch

        x = torch.from_numpy(resample(wave, sr, self.sample_rate))[None, None]  # (1, 1, samples)
        x = x.to(self.model.device, next(self.model.parameters()).dtype)
        with torch.inference_mode():
            codes = self.model.encode(x, num_quantizers=self.codebooks).audio_codes  # (1, n, T)
        return codes[0].T.cpu().numpy().astype(np.int64)

    def _synthesize(self, codes: np.ndarray) -> np.ndarray:
        import torch

        if len(codes) == 0:
            return np.zeros(0)
        c = torch.from_numpy(np.ascontiguousarray(codes.T))[None].to(self.model.device)  # (1, n, T)
        with torch.inference_mode():
            y = self.model.decode(c).audio_values  # (1, 1, samples)
        return y.reshape(-1).float().cpu().numpy()

    def decode(self, codes: np.ndarray) -> np.ndarray:
        c = self.check_codes(codes)
        y = self._synthesize(c)
        n = len(c) * self.hop
        return np.pad(y, (0, max(0, n - len(y))))[:n].astype(np.float32)

    def save(self, out_dir: str | Path) -> None:
        with atomic_dir(out_dir) as tmp:  # the old directory goes only once the new one is complete
            self.model.save_pretrained(str(tmp))
            (tmp / "codec.json").write_text(json.dumps({"kind": self.kind, "n_codebooks": self.codebooks}))


def load_codec(spec: str) -> Codec:
    """``"world:<dir>"`` (a fitted WorldCodec) or ``"mimi:<path>[#n_codebooks]"`` (local Mimi checkpoint)."""
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise CodecError(f"codec spec {spec!r} must look like 'world:<dir>' or 'mimi:<path>'")
    if kind == "world":
        return WorldCodec.load(path)
    if kind == "mimi":
        path, _, n = path.partition("#")
        if not n and (Path(path) / "codec.json").exists():
            n = str(json.loads((Path(path) / "codec.json").read_text()).get("n_codebooks", ""))
        return MimiCodec.load(path, int(n) if n else None)
    raise CodecError(f"unknown codec kind {kind!r} in {spec!r}; use 'world' or 'mimi'")
