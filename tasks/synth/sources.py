"""Collect raw problem records from the sources in params.yaml (``synthesize.sources``).

Real sources load through Hugging Face ``datasets``: a local .jsonl/.json/.parquet file (or a
directory of them) by path, else a hub id (needs a network). A local JSON file that ``datasets``
cannot parse as a whole (one malformed line) is read line by line instead, skipping and counting
the bad lines. Records missing their source's fields are skipped and counted too.
Each record comes out as ``{"idx", "id", "source", "record", "speak_response"}`` with ``record`` a JSON
string, so records of any source fit one Ray Data schema (``speak_response``: the source's flag, whether
its responses are spoken too).
"""

from __future__ import annotations

import collections
import json
import logging
from pathlib import Path
from typing import Iterator

from tasks.core.params import SourceSpec, SynthesizeParams

log = logging.getLogger("synthesize")

# kind -> (default hub id, hub config, fields a record must have, id field or None, optional fields)
# An SVAMP record without an Equation is answer-only: kept here, counted as ``no_solution`` when
# decomposed, the same reason an answer-only record gets through every other loader.
SOURCES: dict[str, tuple[str, str | None, tuple[str, ...], str | None, tuple[str, ...]]] = {
    "gsm8k": ("openai/gsm8k", "main", ("question", "answer"), None, ()),
    "orca_math": ("microsoft/orca-math-word-problems-200k", None, ("question", "answer"), None, ()),
    "metamathqa": ("meta-math/MetaMathQA", None, ("query", "response"), None, ()),
    "svamp": ("ChilleD/SVAMP", None, ("Body", "Question", "Answer"), "ID", ("Equation",)),
    # AQuA-RAT has no answer field: the answer is the option its ``correct`` letter names.
    "aqua": ("deepmind/aqua_rat", "raw", ("question", "options", "correct"), None, ("rationale",)),
}
_EXT = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class SourceError(RuntimeError):
    """A source cannot be read at all (missing file, no network for a hub id)."""


def _local_files(p: Path) -> list[Path]:
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix in _EXT)
        if not files:
            raise SourceError(f"{p} holds no .jsonl/.json/.parquet files; point synthesize.sources[].path at one")
        return files
    if p.suffix not in _EXT:
        raise SourceError(f"{p}: unsupported file type {p.suffix!r}; use .jsonl, .json or .parquet")
    return [p]


def _tolerant_json(files: list[Path], skipped: collections.Counter) -> Iterator[dict]:
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        stripped = text.lstrip()
        if stripped.startswith("["):
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                skipped["bad_json"] += 1
                continue
            for rec in data:
                yield rec
            continue
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                skipped["bad_json"] += 1


def _hf_records(spec: SourceSpec, skipped: collections.Counter) -> Iterator[dict]:
    import datasets

    hub, config = SOURCES[spec.kind][:2]
    p = Path(spec.path).expanduser() if spec.path else None
    if p is not None and p.exists():
        files = _local_files(p)
        builder = _EXT[files[0].suffix]
        try:
            ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
        except Exception as e:  # noqa: BLE001 - datasets raises many types for one bad record
            if builder != "json":
                raise SourceError(f"cannot read {p} ({type(e).__name__}: {e}); check the file") from e
            log.warning("datasets could not parse %s as a whole (%s); reading it record by record", p, type(e).__name__)
            yield from _tolerant_json(files, skipped)
            return
    else:
        if p is not None and (spec.path.startswith((".", "/", "~")) or p.suffix in _EXT):
            raise SourceError(f"source file {p} not found; fix synthesize.sources[{spec.kind}].path")
        hub_id = spec.path or hub
        try:
            ds = datasets.load_dataset(hub_id, config if hub_id == hub else None, split=spec.split)
        except Exception as e:  # noqa: BLE001
            raise SourceError(
                f"cannot load {hub_id!r} split {spec.split!r} from the Hugging Face hub ({type(e).__name__}: {e}); "
                "without a network, download the files and set synthesize.sources[].path to them"
            ) from e
    yield from ds


def collect(cfg: SynthesizeParams) -> tuple[list[dict], dict[str, int], dict[str, collections.Counter]]:
    """All records of all sources: (records, collected per source, skipped per source by reason)."""
    from tasks.synth.builtin import KINDS, generate_problems

    records: list[dict] = []
    per_source: dict[str, int] = {}
    skipped: dict[str, collections.Counter] = {}
    for n_spec, spec in enumerate(cfg.sources):
        name = spec.kind if spec.kind not in per_source else f"{spec.kind}{n_spec}"
        sk: collections.Counter = collections.Counter()
        start = len(records)
        if spec.kind == "builtin":
            n = spec.limit or cfg.num_problems
            kinds = spec.kinds or KINDS
            for prob in generate_problems(n, seed=cfg.seed + n_spec, kinds=kinds, style=cfg.trace):
                records.append({"id": prob.id, "source": "builtin", "record": json.dumps(prob.to_dict()),
                                "speak_response": spec.speak_response})
        else:
            _, _, fields, id_field, optional = SOURCES[spec.kind]
            for i, rec in enumerate(_hf_records(spec, sk)):
                if spec.limit and len(records) - start >= spec.limit:
                    break
                if not isinstance(rec, dict):
                    sk["malformed_record"] += 1
                    continue
                missing = [f for f in fields if rec.get(f) in (None, "")]
                if missing:
                    sk["missing_field"] += 1
                    continue
                rid = str(rec.get(id_field) or "") if id_field else ""
                try:
                    payload = json.dumps({f: rec[f] for f in fields + optional if f in rec}, default=str)
                except (TypeError, ValueError):
                    sk["malformed_record"] += 1
                    continue
                records.append({"id": f"{name}-{rid or i}", "source": spec.kind, "record": payload,
                                "speak_response": spec.speak_response})
        per_source[name] = len(records) - start
        skipped[name] = sk
        log.info("source %s: %d records (%d skipped)", name, per_source[name], sum(sk.values()))
    for i, r in enumerate(records):
        r["idx"] = i
    return records, per_source, skipped
