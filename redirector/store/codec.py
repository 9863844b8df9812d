"""The store's values as JSON: encoders, and decoders that validate every field and range."""

from __future__ import annotations

import json
import logging
import math
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from redirector.core.filefacts import ALGORITHMS, BadCopy, FileFacts, valid_hex
from redirector.core.history import (
    Event,
    EventKind,
    HistoryData,
    LagSample,
    MirrorHistory,
    Phase,
    Transition,
)
from redirector.core.judge import FUTURE_SLACK
from redirector.core.models import (
    HierarchyEntry,
    MasterState,
    MasterVersion,
    MirrorState,
    RepoCheck,
    RepodataState,
    RepomdHistory,
    RepomdVersion,
    Status,
    SyncInfo,
)
from redirector.store.base import FACT_SOURCES, MAX_FILE_SIZE, Poison, StoreError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# Stored dates are plausible within [0 or EARLIEST, now + FUTURE_SLACK] (see `_date`). An old
# date on a mirror only makes it look behind or unchecked; an old master history would make
# every mirror look current, so the master's dates must be after 2000-01-01T00:00:00Z, which
# no SME master state predates.
EARLIEST = 946684800.0
# A backoff's retry time is in the future by design, but never by more than this (backoff_max
# is an hour by default); a later one would keep a mirror unprobed for good.
RETRY_HORIZON = 31 * 86400.0
# The generation that a counter holding junk reads as: readers load once, then wait for a
# writer to reset it (every write does), instead of failing on it forever.
POISONED_GENERATION = -2
_log = logging.getLogger(__name__)


# --- serialization -------------------------------------------------------------------------


def _dumps(obj: dict[str, Any]) -> str:
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:  # NaN or infinity: not JSON, and a bug upstream
        raise StoreError(f"cannot encode: {exc}") from exc


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _load_object(raw: str | bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise StoreError(f"bad {what} JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise StoreError(f"bad {what}: not a JSON object")
    version = obj.get("v")
    if version != SCHEMA_VERSION:
        raise StoreError(f"bad {what}: schema version {version!r}, expected {SCHEMA_VERSION}")
    return obj


def _number(obj: Mapping[str, Any], key: str, what: str) -> float:
    value = obj.get(key)
    # bool is an int subclass; True is not a time
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StoreError(f"bad {what}: {key} must be a number, got {value!r}")
    # json reads 1e400 as infinity, and an int past float range cannot become a time
    try:
        out = float(value)
    except OverflowError as exc:
        raise StoreError(f"bad {what}: {key} is out of range") from exc
    if not math.isfinite(out):
        raise StoreError(f"bad {what}: {key} is not finite")
    return out


def _date(
    obj: Mapping[str, Any],
    key: str,
    what: str,
    now: float | None,
    horizon: float = FUTURE_SLACK,
    earliest: float = 0.0,
) -> float:
    """A unix time, within [earliest, now + horizon] when `now` is given.

    The upper bound is what the poller itself accepts from a trace (judge.FUTURE_SLACK): a
    stored date past it was never written by us, and believing it makes every mirror look
    current (a master dated 2100) or breaks date formatting (1e308).
    """
    value = _number(obj, key, what)
    if now is not None and not earliest <= value <= now + horizon:
        raise StoreError(f"bad {what}: {key} {value!r} is not a plausible date")
    return value


def _optional_date(
    obj: Mapping[str, Any], key: str, what: str, now: float | None, horizon: float = FUTURE_SLACK
) -> float | None:
    return None if obj.get(key) is None else _date(obj, key, what, now, horizon)


def _string(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise StoreError(f"bad {what}: {key} must be a string, got {value!r}")
    return value


def _optional_string(obj: Mapping[str, Any], key: str, what: str) -> str | None:
    return None if obj.get(key) is None else _string(obj, key, what)


def _string_tuple(obj: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise StoreError(f"bad {what}: {key} must be a list of strings")
    return tuple(value)


def _optional_bool(obj: Mapping[str, Any], key: str, what: str) -> bool | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        raise StoreError(f"bad {what}: {key} must be true, false or null")
    return value


def encode_state(s: MirrorState) -> str:
    """`s` as a JSON object with ``"v": 1``; `decode_state` reverses it exactly."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "name": s.name,
            "status": s.status.value,
            "checked_at": s.checked_at,
            "master_date": s.master_date,
            "behind_since": s.behind_since,
            "own_date": s.own_date,
            "error": s.error,
            "failures": s.failures,
            "lacks": list(s.lacks),
            "covered": list(s.covered),
            "coverage_at": s.coverage_at,
            "coverage_note": s.coverage_note,
            "retry_at": s.retry_at,
            "trace_name": s.trace_name,
            "note": s.note,
            "ipv6": s.ipv6,
            "ipv6_note": s.ipv6_note,
        }
    )


def decode_state(raw: str | bytes, *, now: float | None = None) -> MirrorState:
    """Parse `encode_state` output; unknown keys are ignored, anything else wrong is StoreError.

    Only ``v``, ``name``, ``status`` and ``checked_at`` are required; the rest default as in
    `MirrorState`. With `now`, every date must be plausible at `now` (see `_date`).
    """
    what = "mirror state"
    obj = _load_object(raw, what)
    try:
        status = Status(obj.get("status"))
    except ValueError as exc:
        raise StoreError(f"bad {what}: unknown status {obj.get('status')!r}") from exc
    failures = obj.get("failures", 0)
    if isinstance(failures, bool) or not isinstance(failures, int) or not 0 <= failures <= 10**9:
        raise StoreError(f"bad {what}: failures must be a non-negative integer")
    lacks = obj.get("lacks", [])
    if not isinstance(lacks, list) or not all(isinstance(p, str) for p in lacks):
        raise StoreError(f"bad {what}: lacks must be a list of strings")
    return MirrorState(
        name=_string(obj, "name", what),
        status=status,
        checked_at=_date(obj, "checked_at", what, now),
        master_date=_optional_date(obj, "master_date", what, now),
        behind_since=_optional_date(obj, "behind_since", what, now),
        own_date=_optional_date(obj, "own_date", what, now),
        error=_optional_string(obj, "error", what),
        failures=failures,
        lacks=tuple(lacks),
        covered=_string_tuple(obj, "covered", what),
        coverage_at=_optional_date(obj, "coverage_at", what, now),
        coverage_note=_optional_string(obj, "coverage_note", what),
        retry_at=_optional_date(obj, "retry_at", what, now, RETRY_HORIZON),
        trace_name=_optional_string(obj, "trace_name", what),
        note=_optional_string(obj, "note", what),
        ipv6=_optional_bool(obj, "ipv6", what),
        ipv6_note=_optional_string(obj, "ipv6_note", what),
    )


def encode_master(m: MasterState) -> str:
    """`m` as a JSON object with ``"v": 1``, history oldest first."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "history": [{"date": v.date, "first_seen": v.first_seen} for v in m.history],
            "checked_at": m.checked_at,
            "error": m.error,
        }
    )


def decode_master(raw: str | bytes, *, now: float | None = None) -> MasterState:
    """Parse `encode_master` output; unknown keys are ignored, anything else wrong is StoreError.

    The history must be in date order (the poller appends only newer dates). With `now`,
    every date must be plausible at `now` (see `_date`).
    """
    what = "master state"
    obj = _load_object(raw, what)
    history = obj.get("history", [])
    if not isinstance(history, list):
        raise StoreError(f"bad {what}: history must be a list")
    versions: list[MasterVersion] = []
    for entry in history:
        if not isinstance(entry, dict):
            raise StoreError(f"bad {what}: history entries must be objects")
        version = MasterVersion(
            date=_date(entry, "date", what, now, earliest=EARLIEST),
            first_seen=_date(entry, "first_seen", what, now, earliest=EARLIEST),
        )
        if versions and version.date <= versions[-1].date:
            raise StoreError(f"bad {what}: history is not in date order")
        versions.append(version)
    return MasterState(
        history=tuple(versions),
        checked_at=_date(obj, "checked_at", what, now),
        error=_optional_string(obj, "error", what),
    )


def encode_repomd_history(h: RepomdHistory) -> str:
    """`h` as a JSON object with ``"v": 1``, versions oldest first."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "history": [
                {
                    "size": v.size,
                    "timestamp": v.timestamp,
                    "md5": v.md5,
                    "sha1": v.sha1,
                    "sha256": v.sha256,
                    "sha512": v.sha512,
                    "first_seen": v.first_seen,
                }
                for v in h.history
            ],
            "checked_at": h.checked_at,
            "error": h.error,
        }
    )


def _whole(obj: Mapping[str, Any], key: str, what: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StoreError(f"bad {what}: {key} must be a non-negative integer, got {value!r}")
    return value


def decode_repomd_history(raw: str | bytes, *, now: float | None = None) -> RepomdHistory:
    """Parse `encode_repomd_history` output; anything wrong is StoreError."""
    what = "repomd history"
    obj = _load_object(raw, what)
    history = obj.get("history", [])
    if not isinstance(history, list) or not all(isinstance(e, dict) for e in history):
        raise StoreError(f"bad {what}: history must be a list of objects")
    return RepomdHistory(
        history=tuple(
            RepomdVersion(
                size=_whole(e, "size", what),
                timestamp=_whole(e, "timestamp", what),
                md5=_string(e, "md5", what),
                sha1=_string(e, "sha1", what),
                sha256=_string(e, "sha256", what),
                sha512=_string(e, "sha512", what),
                first_seen=_date(e, "first_seen", what, now),
            )
            for e in history
        ),
        checked_at=_date(obj, "checked_at", what, now),
        error=_optional_string(obj, "error", what),
    )


def encode_repo_checks(mirrors: Mapping[str, Mapping[str, RepoCheck]], checked_at: float) -> str:
    """Every mirror's verdicts (mirror -> repo directory -> verdict) as one JSON object."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "checked_at": checked_at,
            "mirrors": {
                name: {d: v.value for d, v in sorted(verdicts.items())}
                for name, verdicts in sorted(mirrors.items())
            },
        }
    )


def decode_repo_checks(
    raw: str | bytes, *, now: float | None = None
) -> tuple[dict[str, dict[str, RepoCheck]], float]:
    """Parse `encode_repo_checks` output -> (verdicts by mirror, checked_at)."""
    what = "repodata verdicts"
    obj = _load_object(raw, what)
    mirrors = obj.get("mirrors", {})
    if not isinstance(mirrors, dict):
        raise StoreError(f"bad {what}: mirrors must be an object")
    out: dict[str, dict[str, RepoCheck]] = {}
    for name, verdicts in mirrors.items():
        if not isinstance(verdicts, dict):
            raise StoreError(f"bad {what}: verdicts of {name!r} must be an object")
        try:
            out[name] = {str(d): RepoCheck(v) for d, v in verdicts.items()}
        except ValueError as exc:
            raise StoreError(f"bad {what}: unknown verdict for {name!r}") from exc
    return out, _date(obj, "checked_at", what, now)


# --- history -------------------------------------------------------------------------------


def encode_history(h: MirrorHistory) -> str:
    """`h` as a JSON object with ``"v": 1``; `decode_history` reverses it exactly."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "name": h.name,
            "transitions": [[t.at, t.phase.value, t.reason] for t in h.transitions],
            "lags": [[x.at, x.lag] for x in h.lags],
        }
    )


def _pair_number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StoreError(f"bad {what}: {value!r} is not a number")
    return float(value)


_MAX_SPAN = 100 * 365 * 86400.0  # a lag or an outage longer than this was not measured by us


def _plausible(value: float, what: str, now: float | None, *, span: bool = False) -> float:
    """`value` as a date within [0, now + FUTURE_SLACK], or (`span`) a duration within
    [0, 100 years]: the views format both, and 1e308 must not reach a formatter."""
    upper = _MAX_SPAN if span else (now + FUTURE_SLACK if now is not None else math.inf)
    if not 0.0 <= value <= upper:
        raise StoreError(f"bad {what}: {value!r} is out of range")
    return value


def decode_history(raw: str | bytes, now: float | None = None) -> MirrorHistory:
    """Parse `encode_history` output; unknown keys are ignored, anything else wrong is
    StoreError. With `now`, dates past now + FUTURE_SLACK are wrong too."""
    what = "mirror history"
    obj = _load_object(raw, what)
    transitions = obj.get("transitions", [])
    lags = obj.get("lags", [])
    if not isinstance(transitions, list) or not isinstance(lags, list):
        raise StoreError(f"bad {what}: transitions and lags must be lists")
    ts = []
    for t in transitions:
        if not isinstance(t, list) or len(t) != 3:
            raise StoreError(f"bad {what}: a transition must be [at, phase, reason]")
        try:
            phase = Phase(t[1])
        except ValueError as exc:
            raise StoreError(f"bad {what}: unknown phase {t[1]!r}") from exc
        if t[2] is not None and not isinstance(t[2], str):
            raise StoreError(f"bad {what}: a transition's reason must be a string or null")
        ts.append(Transition(_plausible(_pair_number(t[0], what), what, now), phase, t[2]))
    samples = []
    for x in lags:
        if not isinstance(x, list) or len(x) != 2:
            raise StoreError(f"bad {what}: a lag sample must be [at, lag]")
        lag = None if x[1] is None else _plausible(_pair_number(x[1], what), what, now, span=True)
        samples.append(LagSample(_plausible(_pair_number(x[0], what), what, now), lag))
    return MirrorHistory(_string(obj, "name", what), tuple(ts), tuple(samples))


def encode_event(e: Event) -> str:
    """`e` as a JSON object with ``"v": 1``; `decode_event` reverses it exactly."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "at": e.at,
            "kind": e.kind.value,
            "subject": e.subject,
            "detail": e.detail,
            "duration": e.duration,
        }
    )


def decode_event(raw: str | bytes, now: float | None = None) -> Event:
    """Parse `encode_event` output; unknown keys are ignored, anything else wrong is StoreError.
    With `now`, a date past now + FUTURE_SLACK is wrong too."""
    what = "event"
    obj = _load_object(raw, what)
    try:
        kind = EventKind(obj.get("kind"))
    except ValueError as exc:
        raise StoreError(f"bad {what}: unknown kind {obj.get('kind')!r}") from exc
    duration = None if obj.get("duration") is None else _number(obj, "duration", what)
    return Event(
        at=_date(obj, "at", what, now),
        kind=kind,
        subject=_optional_string(obj, "subject", what),
        detail=_string(obj, "detail", what),
        duration=None if duration is None else _plausible(duration, what, now, span=True),
    )


def _named_history(name: object, raw: object, now: float) -> MirrorHistory:
    if not isinstance(name, str) or not isinstance(raw, str | bytes):
        raise StoreError("bad mirror history: not a string")
    h = decode_history(raw, now)
    if h.name != name:
        raise StoreError(f"bad mirror history: {name!r} holds that of {h.name!r}")
    return h


def _event(raw: object, now: float) -> Event:
    if not isinstance(raw, str | bytes):
        raise StoreError("bad event: not a string")
    return decode_event(raw, now)


def decode_histories(
    raw_history: Mapping[Any, Any], raw_events: Iterable[Any], now: float, poisoned: list[Poison]
) -> HistoryData:
    """Every mirror history and event that reads, as of `now`; each one that does not is
    listed in `poisoned` and dropped, so one bad entry costs only itself."""
    mirrors: dict[str, MirrorHistory] = {}
    for raw_name, raw in raw_history.items():
        name = raw_name.decode("utf-8", "replace") if isinstance(raw_name, bytes) else raw_name
        try:
            mirrors[name] = _named_history(name, raw, now)
        except StoreError as e:
            poisoned.append(Poison("history", str(name)[:80], str(e)))
    events = []
    for raw in raw_events:
        try:
            events.append(_event(raw, now))
        except StoreError as e:
            poisoned.append(Poison("events", None, str(e)))
    return HistoryData(types.MappingProxyType(mirrors), tuple(events))


def check_keep(keep: int) -> None:
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be a whole number from 1 up, got {keep!r}")


def encode_sync(info: SyncInfo) -> str:
    """`info` as a JSON object with ``"v": 1``; `decode_sync` reverses it exactly."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "name": info.name,
            "checked_at": info.checked_at,
            "upstream": info.upstream,
            "hierarchy": [[e.tracefile, e.mirror, e.host, e.upstream] for e in info.hierarchy],
            "error": info.error,
        }
    )


def decode_sync(raw: str | bytes, *, now: float | None = None) -> SyncInfo:
    """Parse `encode_sync` output; unknown keys are ignored, anything else wrong is StoreError."""
    what = "sync info"
    obj = _load_object(raw, what)
    lines = obj.get("hierarchy", [])
    if not isinstance(lines, list) or not all(
        isinstance(x, list) and len(x) == 4 and all(isinstance(f, str) for f in x) for x in lines
    ):
        raise StoreError(f"bad {what}: hierarchy must be a list of four strings each")
    return SyncInfo(
        name=_string(obj, "name", what),
        checked_at=_date(obj, "checked_at", what, now),
        upstream=_optional_string(obj, "upstream", what),
        hierarchy=tuple(HierarchyEntry(*x) for x in lines),
        error=_optional_string(obj, "error", what),
    )


def _tree_path(obj: Mapping[str, Any], key: str, what: str) -> str:
    """A path below the tree root as the hasher writes it: relative, no '.' or '..' part."""
    value = _string(obj, key, what)
    parts = value.split("/")
    if (
        not value
        or len(value) > 4096
        or not value.isprintable()
        or any(p in {"", ".", ".."} for p in parts)
    ):
        raise StoreError(f"bad {what}: {key} {value[:100]!r} is not a path below the tree")
    return value


def _finite(obj: Mapping[str, Any], key: str, what: str) -> float:
    value = _number(obj, key, what)
    if not math.isfinite(value) or not -(2**40) < value < 2**40:
        raise StoreError(f"bad {what}: {key} is out of range")
    return value


def encode_facts(f: FileFacts) -> str:
    """`f` as a JSON object with ``"v": 1``; `decode_facts` reverses it exactly."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "path": f.path,
            "size": f.size,
            "mtime": f.mtime,
            **{a: f.hash(a) for a in ALGORITHMS},
            "piece_length": f.piece_length,
            "pieces": list(f.pieces),
            "source": f.source,
        }
    )


def decode_facts(raw: str | bytes) -> FileFacts:
    """Parse `encode_facts` output. Every hash must be hex of its algorithm's length, and the
    pieces must cover the size exactly: facts that a client would check a download against
    are refused (StoreError) rather than half believed."""
    what = "file facts"
    obj = _load_object(raw, what)
    size = _whole(obj, "size", what)
    if size > MAX_FILE_SIZE:
        raise StoreError(f"bad {what}: size is out of range")
    hashes: dict[str, str | None] = {}
    for a in ALGORITHMS:
        value = obj.get(a)
        if value is not None and not valid_hex(a, value):
            raise StoreError(f"bad {what}: {a} is not a {a} hex digest")
        hashes[a] = value
    piece_length = _whole(obj, "piece_length", what) if "piece_length" in obj else 0
    pieces = _string_tuple(obj, "pieces", what)
    if pieces:
        if piece_length <= 0 or len(pieces) != -(-size // piece_length):
            raise StoreError(f"bad {what}: {len(pieces)} pieces do not cover {size} bytes")
        if not all(valid_hex("sha256", p) for p in pieces):
            raise StoreError(f"bad {what}: pieces must be sha256 hex digests")
    source = obj.get("source", "tree")
    if source not in FACT_SOURCES:
        raise StoreError(f"bad {what}: unknown source {source!r}")
    return FileFacts(
        path=_tree_path(obj, "path", what),
        size=size,
        mtime=_finite(obj, "mtime", what),
        md5=hashes["md5"],
        sha1=hashes["sha1"],
        sha256=hashes["sha256"],
        sha512=hashes["sha512"],
        piece_length=piece_length if pieces else 0,
        pieces=pieces,
        source=source,
    )


def encode_bad_copy(b: BadCopy) -> str:
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "mirror": b.mirror,
            "path": b.path,
            "reason": b.reason,
            "seen_at": b.seen_at,
        }
    )


def decode_bad_copy(raw: str | bytes) -> BadCopy:
    what = "bad copy"
    obj = _load_object(raw, what)
    return BadCopy(
        mirror=_string(obj, "mirror", what)[:200],
        path=_tree_path(obj, "path", what),
        reason=_string(obj, "reason", what)[:300],
        seen_at=_finite(obj, "seen_at", what),
    )


def bad_copy_field(b: BadCopy) -> str:
    """The field a bad copy is kept under: one per mirror and path (a space is in neither a
    mirror name nor, as the hasher writes them, the path's start)."""
    return f"{b.mirror} {b.path}"


def decode_each(
    raws: Mapping[Any, str | bytes], decode: Callable[[str | bytes], Any], what: str
) -> list[tuple[str, Any]]:
    """(field, value) for every value `decode` accepts; the rest are left out and logged, so
    one damaged entry costs that entry, not every file's facts."""
    out = []
    for field_name, raw in raws.items():
        try:
            name = (
                field_name.decode("utf-8", "surrogateescape")
                if isinstance(field_name, bytes)
                else str(field_name)
            )
            out.append((name, decode(raw)))
        except StoreError as exc:
            _log.warning("%s %r left out: %s", what, field_name, exc)
    return out


def facts_by_path(entries: Iterable[tuple[str, FileFacts]]) -> dict[str, FileFacts]:
    """Decoded facts by path; a value filed under another path than its own is not believed."""
    out: dict[str, FileFacts] = {}
    for field_name, f in entries:
        if f.path == field_name:
            out[f.path] = f
        else:
            _log.warning("file facts %r left out: they are those of %r", field_name, f.path)
    return out


# --- reading a whole store, entry by entry ----------------------------------------------


def field_name(raw: bytes | str) -> str:
    """A hash field or entry name as text; bytes that are not UTF-8 keep their value through
    surrogate escapes, so a writer can still name (and delete) them."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")


def _json_value(raw_name: bytes | str, value: Any, what: str) -> str | bytes:
    """The stored JSON text of one entry, after checking its name is UTF-8."""
    if isinstance(raw_name, bytes):
        try:
            raw_name.decode()
        except UnicodeDecodeError as exc:
            raise StoreError(f"bad {what}: name is not UTF-8") from exc
    if not isinstance(value, str | bytes):
        raise StoreError(f"bad {what}: not a JSON string")
    return value


def _named_state(name: str, raw: str | bytes, now: float) -> MirrorState:
    state = decode_state(raw, now=now)
    if state.name != name:
        raise StoreError(f"bad mirror state: {name!r} holds the state of {state.name!r}")
    return state


def decode_states(
    raw: Mapping[Any, Any], now: float, poisoned: list[Poison]
) -> dict[str, MirrorState]:
    """Every readable state of a ``states`` hash; each unreadable one goes to `poisoned`."""
    out: dict[str, MirrorState] = {}
    for raw_name, value in raw.items():
        name = field_name(raw_name)
        try:
            out[name] = _named_state(name, _json_value(raw_name, value, "mirror state"), now)
        except StoreError as e:
            poisoned.append(Poison("states", name, str(e)))
    return out


def decode_master_entry(
    raw: str | bytes | None, now: float, poisoned: list[Poison]
) -> MasterState | None:
    """The master state, or None when absent or unreadable (then listed in `poisoned`)."""
    if raw is None:
        return None
    try:
        return decode_master(raw, now=now)
    except StoreError as e:
        poisoned.append(Poison("master", None, str(e)))
        return None


def decode_repodata(
    raw_repomd: Mapping[Any, Any],
    raw_checks: str | bytes | None,
    now: float,
    poisoned: list[Poison],
) -> RepodataState | None:
    """The repodata state from its two keys; None before the first repodata pass wrote them.

    An unreadable history drops that repo only; unreadable verdicts drop every verdict but
    keep the histories, which the next repodata pass needs to judge the mirrors again.
    """
    repos: dict[str, RepomdHistory] = {}
    for raw_dir, value in raw_repomd.items():
        d = field_name(raw_dir)
        try:
            repos[d] = decode_repomd_history(_json_value(raw_dir, value, "repomd history"), now=now)
        except StoreError as e:
            poisoned.append(Poison("repomd", d, str(e)))
    if raw_checks is None:
        return None
    try:
        mirrors, checked_at = decode_repo_checks(raw_checks, now=now)
    except StoreError as e:
        poisoned.append(Poison("repodata", None, str(e)))
        if not repos:
            return None
        mirrors, checked_at = {}, max(h.checked_at for h in repos.values())
    return RepodataState(
        repos=types.MappingProxyType(repos),
        mirrors=types.MappingProxyType(mirrors),
        checked_at=checked_at,
    )


def _named_sync(name: str, raw: str | bytes, now: float) -> SyncInfo:
    info = decode_sync(raw, now=now)
    if info.name != name:
        raise StoreError(f"bad sync info: {name!r} holds the info of {info.name!r}")
    return info


def decode_syncs(raw: Mapping[Any, Any], now: float, poisoned: list[Poison]) -> dict[str, SyncInfo]:
    """Every readable entry of the ``sync`` hash; each unreadable one goes to `poisoned`."""
    out: dict[str, SyncInfo] = {}
    for raw_name, value in raw.items():
        name = field_name(raw_name)
        try:
            out[name] = _named_sync(name, _json_value(raw_name, value, "sync info"), now)
        except StoreError as e:
            poisoned.append(Poison("sync", name, str(e)))
    return out


class PoisonLog:
    """Logs each unreadable value once while it stays unreadable, and again if it comes back
    after a repair: a reader loads twice a second, a line per load would flood the log."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._seen: dict[str, frozenset[tuple[str, str | None]]] = {}

    def report(self, scope: str, poisoned: Iterable[Poison]) -> None:
        """`poisoned`: everything unreadable in `scope` (e.g. "load") at this read."""
        now = {(p.key, p.field): p for p in poisoned}
        before = self._seen.get(scope, frozenset())
        for where, p in now.items():
            if where not in before:
                entry = p.key if p.field is None else f"{p.key}[{p.field!r}]"
                log.warning(
                    "%s: dropped unreadable %s (the next write replaces it): %s",
                    self._where, entry, p.reason,
                )  # fmt: skip
        self._seen[scope] = frozenset(now)
