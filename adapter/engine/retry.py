"""How long to wait before retrying a failed invocation, and when to give up.

Exponential backoff in the shape of Restate's invocation retry policy (initial interval,
exponentiation factor, max interval, max attempts). When attempts run out the record is
dead-lettered (or recorded as failed), so one poisonous record cannot hold its partition's
commit position back forever.

``attempt`` counts attempts already made: after the first attempt fails, ask
``next_delay(1, ...)``. With the defaults the delays are 0.05, 0.1, 0.2 … 25.6, then 30 s
capped, and the 20th failed attempt gives up — about five and a half minutes in all, enough
to ride out a handler redeploy without parking a record for hours.

Jitter only ever *shortens* a delay (``delay * (1 - jitter * u)``, ``u`` in [0, 1)), so
``max_interval`` is a hard bound and retries after an outage still spread out. A handler's
``Retry-After`` is honoured when it asks for longer than the backoff, but capped at
``max_interval`` — a misbehaving handler must not park a record indefinitely — and it grants
no extra attempts. It is not jittered: the handler asked for that time.

Pure and deterministic: the caller passes the random source (or the draw itself). The one
exception is :func:`until_ok`, the engine's single retry-until-it-works loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import TypeVar

from adapter.errors import ConfigError, IngressError

__all__ = ["OPTION_KEYS", "RetryAbandoned", "RetryPolicy", "until_ok"]

T = TypeVar("T")

_INITIAL = "retry.initial.interval.ms"
_MAX_INTERVAL = "retry.max.interval.ms"
_MAX_ATTEMPTS = "retry.max.attempts"
_MULTIPLIER = "retry.backoff.multiplier"
_JITTER = "retry.jitter"

OPTION_KEYS: tuple[str, ...] = (_INITIAL, _MAX_INTERVAL, _MAX_ATTEMPTS, _MULTIPLIER, _JITTER)
"""Flat option names read by :meth:`RetryPolicy.from_options`."""

# Kafka client options that share the ``retry.`` prefix; they configure the client's own
# protocol retries, belong to the same option map, and must not be mistaken for typos.
_CLIENT_RETRY_KEYS = frozenset({"retry.backoff.ms", "retry.backoff.max.ms"})

_KNOWN_RETRY_PREFIXED = frozenset(OPTION_KEYS) | _CLIENT_RETRY_KEYS

_UNLIMITED = frozenset({"unlimited", "none", "-1"})

OptionValue = str | int | float


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with a cap, a jitter fraction and an attempt limit.

    Times are in seconds. ``max_attempts`` counts every attempt including the first
    (``1`` = never retry); ``None`` retries forever, which blocks the partition's commit
    position behind a record that never succeeds — only for handlers known to recover.
    """

    initial_interval: float = 0.05
    multiplier: float = 2.0
    max_interval: float = 30.0
    max_attempts: int | None = 20
    jitter: float = 0.2

    def __post_init__(self) -> None:
        _validate(
            self.initial_interval,
            self.multiplier,
            self.max_interval,
            self.max_attempts,
            self.jitter,
            names={f.name: f.name for f in fields(self)},
        )

    def exhausted(self, attempt: int) -> bool:
        """``attempt`` failed attempts leave no attempt to make."""
        return self.max_attempts is not None and attempt >= self.max_attempts

    def backoff(self, attempt: int) -> float:
        """The un-jittered delay after ``attempt`` failed attempts (ignores the limit)."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        steps = attempt - 1
        ceiling = self.max_interval / self.initial_interval
        # Compare in log space: multiplier ** steps overflows a float long before attempts do.
        if self.multiplier > 1.0 and steps * math.log(self.multiplier) >= math.log(ceiling):
            return self.max_interval
        return min(self.max_interval, self.initial_interval * self.multiplier**steps)

    def next_delay(
        self,
        attempt: int,
        retry_after: float | None,
        rand: random.Random | float,
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or ``None`` to give up.

        ``rand`` is a ``random.Random`` to draw from, or the draw itself in [0, 1)
        (``0.0`` applies no jitter). A ``retry_after`` that is negative or not finite is
        ignored, since it comes off the wire.
        """
        if self.exhausted(attempt):
            return None
        delay = self.backoff(attempt)
        if self.jitter:
            u = rand.random() if isinstance(rand, random.Random) else rand
            if not 0.0 <= u < 1.0:
                raise ValueError(f"rand must be in [0, 1), got {u}")
            delay *= 1.0 - self.jitter * u
        if retry_after is not None and math.isfinite(retry_after) and retry_after > delay:
            delay = min(retry_after, self.max_interval)
        return delay

    def schedule(self) -> list[float]:
        """Every un-jittered delay until giving up (for docs, logs and tests)."""
        if self.max_attempts is None:
            raise ValueError("an unlimited policy has no finite schedule")
        return [self.backoff(a) for a in range(1, self.max_attempts)]

    @classmethod
    def from_options(
        cls,
        options: Mapping[str, OptionValue],
        *,
        base: RetryPolicy | None = None,
    ) -> RetryPolicy:
        """Build from flat option strings, overriding ``base`` (default: the defaults).

        Reads ``retry.initial.interval.ms``, ``retry.max.interval.ms``,
        ``retry.max.attempts`` (a positive integer, or ``unlimited``),
        ``retry.backoff.multiplier`` and ``retry.jitter`` (a fraction in [0, 1]). Other keys
        are ignored so the whole subscription option map can be passed in, except unknown
        ``retry.*`` keys, which are rejected as likely typos. Raises :class:`ConfigError`
        naming the key.
        """
        policy = base if base is not None else cls()
        unknown = [k for k in options if k.startswith("retry.") and k not in _KNOWN_RETRY_PREFIXED]
        if unknown:
            known = ", ".join(OPTION_KEYS)
            raise ConfigError(f"unknown retry option {unknown[0]!r}; known options: {known}")
        initial = policy.initial_interval
        max_interval = policy.max_interval
        multiplier = policy.multiplier
        max_attempts = policy.max_attempts
        jitter = policy.jitter
        if _INITIAL in options:
            initial = _parse_number(_INITIAL, options[_INITIAL]) / 1000.0
        if _MAX_INTERVAL in options:
            max_interval = _parse_number(_MAX_INTERVAL, options[_MAX_INTERVAL]) / 1000.0
        if _MULTIPLIER in options:
            multiplier = _parse_number(_MULTIPLIER, options[_MULTIPLIER])
        if _JITTER in options:
            jitter = _parse_number(_JITTER, options[_JITTER])
        if _MAX_ATTEMPTS in options:
            max_attempts = _parse_attempts(_MAX_ATTEMPTS, options[_MAX_ATTEMPTS])
        _validate(
            initial,
            multiplier,
            max_interval,
            max_attempts,
            jitter,
            names={
                "initial_interval": _INITIAL,
                "multiplier": _MULTIPLIER,
                "max_interval": _MAX_INTERVAL,
                "max_attempts": _MAX_ATTEMPTS,
                "jitter": _JITTER,
            },
            scale={"initial_interval": 1000.0, "max_interval": 1000.0},
        )
        return replace(
            policy,
            initial_interval=initial,
            multiplier=multiplier,
            max_interval=max_interval,
            max_attempts=max_attempts,
            jitter=jitter,
        )


def _validate(
    initial_interval: float,
    multiplier: float,
    max_interval: float,
    max_attempts: int | None,
    jitter: float,
    *,
    names: Mapping[str, str],
    scale: Mapping[str, float] | None = None,
) -> None:
    """Raise ConfigError naming the offending setting as the caller spells it."""
    scale = scale or {}

    def shown(field: str, value: float) -> str:
        return f"{value * scale.get(field, 1.0):g}"

    for field, value in (
        ("initial_interval", initial_interval),
        ("max_interval", max_interval),
        ("multiplier", multiplier),
        ("jitter", jitter),
    ):
        if not math.isfinite(value):
            raise ConfigError(f"{names[field]} must be finite, got {value!r}")
    initial_shown = shown("initial_interval", initial_interval)
    if initial_interval <= 0:
        raise ConfigError(f"{names['initial_interval']} must be > 0, got {initial_shown}")
    if max_interval < initial_interval:
        raise ConfigError(
            f"{names['max_interval']} ({shown('max_interval', max_interval)}) must be >= "
            f"{names['initial_interval']} ({initial_shown})"
        )
    if multiplier < 1.0:
        raise ConfigError(f"{names['multiplier']} must be >= 1, got {multiplier:g}")
    if not 0.0 <= jitter <= 1.0:
        raise ConfigError(f"{names['jitter']} must be in [0, 1], got {jitter:g}")
    if max_attempts is not None and max_attempts < 1:
        raise ConfigError(
            f"{names['max_attempts']} must be a positive integer or unlimited, got {max_attempts!r}"
        )


def _parse_number(key: str, raw: OptionValue) -> float:
    if isinstance(raw, bool):
        raise ConfigError(f"{key} must be a number, got {raw!r}")
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be finite, got {raw!r}")
    return value


def _parse_attempts(key: str, raw: OptionValue) -> int | None:
    if isinstance(raw, bool):
        raise ConfigError(f"{key} must be a positive integer or 'unlimited', got {raw!r}")
    if isinstance(raw, str) and raw.strip().lower() in _UNLIMITED:
        return None
    if isinstance(raw, int) and raw == -1:
        return None
    try:
        value = int(raw) if not isinstance(raw, float) or raw.is_integer() else None
    except ValueError:
        value = None
    if value is None or value < 1:
        raise ConfigError(f"{key} must be a positive integer or 'unlimited', got {raw!r}")
    return value


class RetryAbandoned(Exception):
    """:func:`until_ok` stopped retrying: the step is no longer wanted (``give_up``, ``stop``)."""


async def until_ok(
    call: Callable[[], Awaitable[T]],
    *,
    on_error: Callable[[IngressError], None],
    errors: tuple[type[IngressError], ...],
    first_delay_s: float = 0.1,
    max_delay_s: float = 5.0,
    give_up: Callable[[], bool] | None = None,
    stop: asyncio.Event | None = None,
) -> T:
    """``await call()`` until it does not raise one of ``errors`` (capped exponential backoff).

    For the engine's steps that must not be skipped — the ledger check before admitting a
    record, a workflow claim, storing a dead letter: the record waits (its offset stays
    uncommitted) rather than being decided without them. ``on_error`` sees every failure, so
    the caller can surface it (``last_error``, a warning). After a failure, RetryAbandoned
    ends the retries if ``give_up()`` says so (the work went elsewhere) or once ``stop`` is
    set (which also cuts the wait short).
    """
    delay = first_delay_s
    while True:
        try:
            return await call()
        except errors as exc:
            on_error(exc)
        if give_up is not None and give_up():
            raise RetryAbandoned
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                raise RetryAbandoned
        delay = min(delay * 2, max_delay_s)
