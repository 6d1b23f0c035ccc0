"""The telemetry router's logic: one raw message in, one record per subsystem out.

Each raw :class:`~smap_bench.schema.TelemetryMessage` is validated and split into seven
:class:`~smap_bench.schema.SubsystemRecord` messages, each bound for
``telemetry.{subsystem}.{satellite_id}`` and keyed by satellite id. A record keeps the
message's timestamp, loop, record_index, the reading's channel, and the ``stages``
stamps with ``router`` added.

Bad input goes to the dead-letter topic as the raw message with a reason
``"<kind>: <detail>"`` (the kind becomes the ``reason`` label of the rejected counter):

- ``malformed JSON``, ``invalid message`` (not a telemetry message: a missing field, a bad
  type, an unknown subsystem name ...), ``unknown satellite`` (not in the fleet), and
  ``duplicate record_index`` / ``out-of-order record_index`` / ``loop older than ...``
  (see :class:`SequenceTracker`): nothing of the message is routed.
- ``missing subsystem``, ``wrong feature count``, ``non-finite value``, or any other fault
  confined to some subsystems' readings: the valid subsystems are still routed and the
  message is dead-lettered once, naming the faulty ones. A bad reading thus costs only
  its own stream one record (a gap the scheduler handles), never the six good ones.

JSON ``NaN`` / ``Infinity`` literals are parsed (not refused as malformed) so that they
are reported as what they are: non-finite values.

Fleet. A satellite is known if ``is_known(satellite_id)`` says so; the service passes the
configured fleet (``satellite_ids(settings.satellites)``) plus the satellites registered
in PostgreSQL, refreshed periodically.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json, to_json

from smap_bench.catalog import SUBSYSTEMS, Subsystem
from smap_bench.schema import TelemetryMessage, decode, describe
from smap_bench.windows import Rejection

STAGE = "router"
_NAMES: dict[Subsystem, str] = {s: s.value for s in Subsystem}

MALFORMED_JSON = "malformed JSON"
INVALID_MESSAGE = "invalid message"
UNKNOWN_SATELLITE = "unknown satellite"
MISSING_SUBSYSTEM = "missing subsystem"
WRONG_FEATURE_COUNT = "wrong feature count"
NON_FINITE = "non-finite value"
#: Every kind of reason the router gives (the first part of a reason, before ':').
REASON_KINDS: tuple[str, ...] = (
    MALFORMED_JSON,
    INVALID_MESSAGE,
    UNKNOWN_SATELLITE,
    MISSING_SUBSYSTEM,
    WRONG_FEATURE_COUNT,
    NON_FINITE,
    Rejection.DUPLICATE.value,
    Rejection.OUT_OF_ORDER.value,
    Rejection.STALE_LOOP.value,
)


@dataclass(frozen=True, slots=True)
class Output:
    """One subsystem record to publish."""

    topic: str
    key: bytes
    value: bytes
    subsystem: Subsystem


@dataclass(frozen=True, slots=True)
class RouteResult:
    """What became of one raw message: records to publish and/or a dead-letter reason."""

    outputs: tuple[Output, ...] = ()
    rejection: str | None = None  #: reason to dead-letter the raw message with
    latency_s: float | None = None  #: wall time since the simulator produced it

    @property
    def kind(self) -> str | None:
        """The reason's kind (one of :data:`REASON_KINDS`), or None if nothing was refused."""
        return None if self.rejection is None else self.rejection.split(":", 1)[0]


class SequenceTracker:
    """Last (loop, record_index) accepted per satellite: refuses repeats and reordering.

    Within a loop, record indices must increase (gaps are allowed: a seek, a lost
    message). A lower index is a duplicate if it was one of the last ``remember``
    accepted indices, otherwise out of order. A higher loop starts afresh; a lower
    loop is refused as stale. A restarted router starts with no memory, so it accepts
    whatever comes first (at-least-once redelivery is then recognised downstream).
    """

    __slots__ = ("_last", "_recent", "remember")

    def __init__(self, remember: int = 64) -> None:
        self.remember = remember
        self._last: dict[str, tuple[int, int]] = {}
        self._recent: dict[str, deque[int]] = {}

    def check(self, satellite_id: str, loop: int, record_index: int) -> Rejection | None:
        """Accept (and remember) the record, or say why not."""
        last = self._last.get(satellite_id)
        if last is not None:
            last_loop, last_index = last
            if loop < last_loop:
                return Rejection.STALE_LOOP
            if loop == last_loop and record_index <= last_index:
                if record_index in self._recent[satellite_id]:
                    return Rejection.DUPLICATE
                return Rejection.OUT_OF_ORDER
        if last is None or loop > last[0]:
            self._recent[satellite_id] = deque(maxlen=self.remember)
        self._last[satellite_id] = (loop, record_index)
        self._recent[satellite_id].append(record_index)
        return None

    def last(self, satellite_id: str) -> tuple[int, int] | None:
        return self._last.get(satellite_id)


def _kind_of(error: dict[str, Any]) -> str:
    """The reason kind of one pydantic error."""
    kind = error["type"]
    if kind == "json_invalid":
        return MALFORMED_JSON
    if kind == "finite_number":
        return NON_FINITE
    message = str(error.get("msg", ""))
    if kind == "value_error" and ("features has" in message or "num_features is" in message):
        return WRONG_FEATURE_COUNT
    return INVALID_MESSAGE


def _reason(kind: str, detail: str) -> str:
    return f"{kind}: {detail}"


def _bad_subsystems(error: ValidationError) -> dict[str, str] | None:
    """Subsystem name -> reason kind, if every error lies inside some subsystem's reading."""
    bad: dict[str, str] = {}
    for problem in error.errors(include_url=False, include_input=False):
        loc = problem["loc"]
        if len(loc) < 2 or loc[0] != "subsystems" or not isinstance(loc[1], str):
            return None
        bad.setdefault(loc[1], _kind_of(dict(problem)))
    return bad


class TelemetryRouter:
    """Validates raw telemetry and splits it into per-subsystem records (pure, in memory).

    ``topic_for(subsystem, satellite_id)`` names the output topic (the settings'
    template); ``is_known`` says whether a satellite belongs to the fleet (None: all do).
    """

    def __init__(
        self,
        topic_for: Callable[[str, str], str],
        is_known: Callable[[str], bool] | Collection[str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        remember: int = 64,
    ) -> None:
        self._topic_for = topic_for
        if is_known is None or callable(is_known):
            self._is_known = is_known
        else:
            known = frozenset(is_known)
            self._is_known = known.__contains__
        self._clock = clock
        self.sequence = SequenceTracker(remember)
        self._topics: dict[tuple[str, str], str] = {}

    def topic(self, subsystem: str, satellite_id: str) -> str:
        key = (subsystem, satellite_id)
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = self._topic_for(subsystem, satellite_id)
        return topic

    def route(self, raw: bytes | str | None) -> RouteResult:
        """Route one raw message (see module for what is refused and why)."""
        if not raw:
            return RouteResult(rejection=_reason(MALFORMED_JSON, "empty message"))
        partial: str | None = None
        try:
            message = decode(TelemetryMessage, raw)
        except ValidationError as error:
            salvaged = self._salvage(raw, error)
            if salvaged is None:
                first = error.errors(include_url=False, include_input=False)[0]
                return RouteResult(rejection=_reason(_kind_of(dict(first)), describe(error)))
            message, partial = salvaged

        satellite = message.satellite_id
        if self._is_known is not None and not self._is_known(satellite):
            return RouteResult(rejection=_reason(UNKNOWN_SATELLITE, f"{satellite!r} not in fleet"))
        refused = self.sequence.check(satellite, message.loop, message.record_index)
        if refused is not None:
            last = self.sequence.last(satellite)
            return RouteResult(
                rejection=_reason(
                    refused.value,
                    f"{satellite} loop {message.loop} record {message.record_index} "
                    f"after loop {last[0] if last else '-'} record {last[1] if last else '-'}",
                )
            )

        now = self._clock()
        stages = dict(message.stages or {})
        produced_at = stages.get("simulator")
        stages[STAGE] = now
        # Serialised once and shared by the seven records: everything but the reading.
        tail = (
            b","
            + to_json(
                {
                    "satellite_id": satellite,
                    "timestamp": message.timestamp.isoformat(),
                    "loop": message.loop,
                    "record_index": message.record_index,
                    "stages": stages,
                }
            )[1:]
        )
        key = satellite.encode()
        outputs = []
        for subsystem, reading in message.subsystems.items():
            name = _NAMES[subsystem]
            extra = reading.__pydantic_extra__
            head = to_json(
                {
                    "subsystem": name,
                    "code": reading.code,
                    "num_features": reading.num_features,
                    "channel": extra.get("channel") if extra else None,
                    "features": reading.features,
                }
            )
            value = head[:-1] + tail
            outputs.append(Output(self.topic(name, satellite), key, value, subsystem))
        missing = [s.value for s in SUBSYSTEMS if s not in message.subsystems]
        if partial is None and missing:
            partial = _reason(MISSING_SUBSYSTEM, ", ".join(missing))
        return RouteResult(
            outputs=tuple(outputs),
            rejection=partial,
            latency_s=None if produced_at is None else now - produced_at,
        )

    def _salvage(
        self, raw: bytes | str, error: ValidationError
    ) -> tuple[TelemetryMessage, str] | None:
        """The message without its faulty readings, and the reason naming them, if possible."""
        bad = _bad_subsystems(error)
        if not bad:
            return None
        try:
            data = from_json(raw, allow_inf_nan=True)
            subsystems = data["subsystems"]
            for name in bad:
                subsystems.pop(name, None)
            if not subsystems:
                return None
            message = TelemetryMessage.model_validate(data)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        kinds = sorted(set(bad.values()))
        kind = kinds[0] if len(kinds) == 1 else INVALID_MESSAGE
        detail = f"subsystem {', '.join(bad)} not routed: {describe(error)}"
        absent = [s.value for s in SUBSYSTEMS if s not in message.subsystems and s.value not in bad]
        if absent:
            detail += f"; {MISSING_SUBSYSTEM} {', '.join(absent)}"
        return message, _reason(kind, detail)
