"""Satellites, subsystems and the SMAP channel each (satellite, subsystem) replays.

The design document gives every satellite seven subsystems (ACS, Data, EPS, FSW, PS, SS,
TCS), each identified by a one-letter code that is also the prefix of the SMAP channels
it replays (``A-1`` belongs to ACS, ``P-3`` to PS, ...). SMAP also has channels with the
prefixes ``B``, ``G`` and ``R``, which match none of the seven subsystems: they belong to
no subsystem (:func:`subsystem_of` returns ``None``), are never assigned to a satellite
by :func:`fleet_assignment`, and are still trained, evaluated and replayed by channel.

Assignment rule: a subsystem's channels are taken in natural order (``A-1, A-2, ...,
A-9``, ``D-1, D-2, ..., D-11``) and dealt round-robin across satellites: ``sat1`` gets
the first, ``sat2`` the second, and so on, cycling when there are more satellites than
channels. Each channel is served by one Triton model named ``SMAP_<channel>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from enum import StrEnum

#: Prefix of every model served by Triton, followed by the channel name.
MODEL_PREFIX = "SMAP_"

#: The 54 SMAP channels with train and test arrays in the public dataset.
SMAP_CHANNELS: tuple[str, ...] = (
    *(f"A-{i}" for i in range(1, 10)),
    "B-1",
    *(f"D-{i}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13)),
    *(f"E-{i}" for i in range(1, 14)),
    *(f"F-{i}" for i in range(1, 4)),
    *(f"G-{i}" for i in (1, 2, 3, 4, 6, 7)),
    *(f"P-{i}" for i in (1, 2, 3, 4, 7)),
    "R-1",
    "S-1",
    *(f"T-{i}" for i in range(1, 4)),
)

_CHANNEL_RE = re.compile(r"^([A-Z])-(\d+)$")
_SATELLITE_RE = re.compile(r"^sat([1-9]\d*)$")


class CatalogError(ValueError):
    """A channel, subsystem, satellite or model name that the catalog cannot place."""


class Subsystem(StrEnum):
    """The seven subsystems of a satellite, in the design document's order.

    The value is the name used in messages, topic names and metric labels.
    """

    ACS = "ACS"
    Data = "Data"
    EPS = "EPS"
    FSW = "FSW"
    PS = "PS"
    SS = "SS"
    TCS = "TCS"

    @property
    def code(self) -> str:
        """One-letter code: the ``code`` field of messages and the channel prefix."""
        return _CODE_OF[self]

    @classmethod
    def parse(cls, name: str) -> Subsystem:
        """The subsystem called ``name`` (case-insensitive), or a CatalogError."""
        for subsystem in cls:
            if subsystem.value.lower() == name.lower():
                return subsystem
        known = ", ".join(s.value for s in cls)
        raise CatalogError(f"unknown subsystem {name!r}; known subsystems: {known}")


_CODE_OF: dict[Subsystem, str] = {
    Subsystem.ACS: "A",
    Subsystem.Data: "D",
    Subsystem.EPS: "E",
    Subsystem.FSW: "F",
    Subsystem.PS: "P",
    Subsystem.SS: "S",
    Subsystem.TCS: "T",
}
_SUBSYSTEM_OF_CODE: dict[str, Subsystem] = {code: sub for sub, code in _CODE_OF.items()}

#: All subsystems in order (ACS, Data, EPS, FSW, PS, SS, TCS).
SUBSYSTEMS: tuple[Subsystem, ...] = tuple(Subsystem)


def subsystem_for_code(code: str) -> Subsystem:
    """The subsystem whose one-letter code (channel prefix) is ``code``."""
    try:
        return _SUBSYSTEM_OF_CODE[code]
    except KeyError:
        known = ", ".join(f"{c}={s.value}" for c, s in _SUBSYSTEM_OF_CODE.items())
        raise CatalogError(f"no subsystem has code {code!r}; known codes: {known}") from None


def parse_channel(channel: str) -> tuple[str, int]:
    """Split a channel name such as ``"D-11"`` into its prefix and number."""
    match = _CHANNEL_RE.match(channel)
    if match is None:
        raise CatalogError(
            f"bad channel name {channel!r}: expected an upper-case letter, '-', a number"
        )
    return match.group(1), int(match.group(2))


def channel_sort_key(channel: str) -> tuple[str, int]:
    """Natural order of channels: A-1, A-2, ..., A-9, B-1, D-1, ..., D-11."""
    return parse_channel(channel)


def sort_channels(channels: Iterable[str]) -> list[str]:
    """Distinct channels in natural order."""
    return sorted(set(channels), key=channel_sort_key)


def subsystem_of(channel: str) -> Subsystem | None:
    """The subsystem a channel belongs to; ``None`` for the B, G and R channels."""
    prefix, _ = parse_channel(channel)
    return _SUBSYSTEM_OF_CODE.get(prefix)


def channels_of(subsystem: Subsystem | str, channels: Iterable[str]) -> list[str]:
    """The channels of ``subsystem`` among ``channels``, in natural order."""
    sub = subsystem if isinstance(subsystem, Subsystem) else Subsystem.parse(subsystem)
    return [c for c in sort_channels(channels) if subsystem_of(c) is sub]


def satellite_ids(n: int) -> list[str]:
    """Identifiers of a fleet of ``n`` satellites: ``["sat1", ..., "sat<n>"]``."""
    if n < 0:
        raise CatalogError(f"number of satellites must be >= 0, got {n}")
    return [f"sat{i}" for i in range(1, n + 1)]


def satellite_number(satellite_id: str) -> int:
    """The 1-based number of a satellite id (``"sat3"`` -> 3)."""
    match = _SATELLITE_RE.match(satellite_id)
    if match is None:
        raise CatalogError(f"bad satellite id {satellite_id!r}: expected 'sat<N>' with N >= 1")
    return int(match.group(1))


def channel_for(
    satellite_id: str, subsystem: Subsystem | str, channels_available: Iterable[str]
) -> str:
    """The channel that ``satellite_id`` replays for ``subsystem`` (round-robin, see module)."""
    sub = subsystem if isinstance(subsystem, Subsystem) else Subsystem.parse(subsystem)
    available = list(channels_available)
    candidates = channels_of(sub, available)
    if not candidates:
        raise CatalogError(
            f"no channel with prefix {sub.code!r} for subsystem {sub.value} among "
            f"{len(available)} available channels"
        )
    return candidates[(satellite_number(satellite_id) - 1) % len(candidates)]


def fleet_assignment(
    n_satellites: int, channels: Sequence[str]
) -> dict[tuple[str, Subsystem], str]:
    """Channel of every (satellite, subsystem) pair of a fleet of ``n_satellites``.

    Subsystems without any channel among ``channels`` are left out of the mapping.
    """
    assignment: dict[tuple[str, Subsystem], str] = {}
    for subsystem in SUBSYSTEMS:
        candidates = channels_of(subsystem, channels)
        if not candidates:
            continue
        for number, satellite in enumerate(satellite_ids(n_satellites)):
            assignment[(satellite, subsystem)] = candidates[number % len(candidates)]
    return assignment


def model_name(channel: str) -> str:
    """Name of the Triton model serving ``channel``: ``SMAP_<channel>``."""
    parse_channel(channel)
    return f"{MODEL_PREFIX}{channel}"


def channel_of_model(name: str) -> str:
    """The channel served by model ``name`` (inverse of :func:`model_name`)."""
    if not name.startswith(MODEL_PREFIX):
        raise CatalogError(f"bad model name {name!r}: expected '{MODEL_PREFIX}<channel>'")
    channel = name[len(MODEL_PREFIX) :]
    parse_channel(channel)
    return channel
