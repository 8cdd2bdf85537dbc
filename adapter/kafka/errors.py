"""aiokafka's failures in words an operator can act on, as :mod:`adapter.errors` exceptions.

aiokafka raises few of its connection failures. ``consumer.start()`` ends in a bare
"Unable to bootstrap" ``KafkaConnectionError`` whose cause (wrong password, rejected
certificate, refused connection) was only logged; once running, the client logs every failed
connection and retries it for ever, and ``getmany()`` just returns nothing. So a failure is
explained from two sources:

- :func:`translate` reads an exception that did reach us, walking its cause chain down to the
  SSL alert, SASL error or OS error underneath;
- a :class:`ConnectionWatch` collects the exceptions aiokafka hands to its loggers. It is
  attributed to one consumer through a context variable: asyncio tasks inherit the context
  of the task that creates them, so the consumer's background tasks (coordinator, fetcher,
  metadata sync) report to the watch of the runner that started the consumer.

Each failure is diagnosed as::

    KafkaError            unreachable, connection closed, timed out, unknown topic ...
    └── KafkaAuthError    SASL refused, certificate rejected (by either side), not authorised,
                          no OAUTHBEARER token

and as *fatal* or not: a fatal failure does not go away while the same client keeps retrying
(credentials, certificates, authorisation), so the runner gives up on the consumer and the
supervisor rebuilds it with backoff (re-reading certificate files, fetching a fresh token).
Unreachable brokers are not fatal: aiokafka reconnects by itself once they are back.

Messages name options, never their values: neither aiokafka's nor the broker's messages carry
credentials, and nothing here adds any.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import errors as ak
from cryptography import x509

from adapter.errors import KafkaAuthError, KafkaError
from adapter.kafka.options import SecuritySettings

__all__ = [
    "ConnectionWatch",
    "Diagnosis",
    "TokenUnavailableError",
    "certificate_problem",
    "diagnose",
    "translate",
    "watch_connections",
]

# How specific a diagnosis is; the most specific one seen explains a failure.
_GENERIC = 0
_NETWORK = 1
_PROTOCOL = 2
_AUTH = 3

_CHAIN_DEPTH = 8
# A response frame longer than this is not a response but bytes of another protocol.
_MAX_SANE_FRAME = 1 << 28


class TokenUnavailableError(ak.KafkaConnectionError):  # type: ignore[misc]
    """No OAUTHBEARER token could be had; raised by token providers *to aiokafka*.

    An aiokafka connection error on purpose: aiokafka then logs the failed connection and
    retries it, as for an unreachable broker, instead of crashing its background tasks with
    an exception type it does not expect. ``reason`` says why, without secrets.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What one failure means: ``message`` for people, ``auth``/``fatal`` for the code."""

    message: str
    auth: bool = False
    fatal: bool = False
    rank: int = _GENERIC
    # Fatal only while the consumer starts (later it is a passing state of a broker).
    fatal_on_start: bool = False

    def error(self, context: str) -> KafkaError:
        cls = KafkaAuthError if self.auth else KafkaError
        return cls(f"{context}: {self.message}")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < _CHAIN_DEPTH:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _broker_message(exc: ak.KafkaError) -> str:
    """The broker's own words of a response error, without aiokafka's ``[Error n] Name:``."""
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
    return text.strip()


_PROTOCOL_HINT = (
    "if the listener uses TLS or SASL, security.protocol (and sasl.mechanism) must say so"
)


# Alerts a TLS server sends about the client's certificate (or its absence).
_CERTIFICATE_ALERTS = frozenset(
    {
        "bad certificate",
        "certificate unknown",
        "certificate expired",
        "certificate revoked",
        "certificate required",
        "unsupported certificate",
        "unknown ca",
        "access denied",
    }
)


# What OpenSSL says when the bytes it gets back are not TLS.
_NOT_TLS_ON_THE_OTHER_SIDE = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG",
        "UNKNOWN_PROTOCOL",
        "HTTP_REQUEST",
    }
)


def _tls_alert(reason: str) -> str | None:
    # OpenSSL names an alert received from the peer like SSLV3_ALERT_BAD_CERTIFICATE.
    for marker in ("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_"):
        if reason.startswith(marker):
            return reason[len(marker) :].lower().replace("_", " ")
    return None


def _diagnose_one(exc: BaseException) -> Diagnosis | None:
    """The meaning of one exception of a chain, or None if it says nothing specific."""
    if isinstance(exc, TokenUnavailableError):
        return Diagnosis(f"no OAUTHBEARER token: {exc.reason}", auth=True, rank=_AUTH)
    if isinstance(exc, ak.SaslAuthenticationFailed):
        said = _broker_message(exc) or "authentication failed"
        return Diagnosis(
            f"SASL authentication failed: the broker said {said!r}; check sasl.username and "
            "sasl.password (or the OAUTHBEARER token)",
            auth=True,
            fatal=True,
            rank=_AUTH,
        )
    if isinstance(exc, ak.UnsupportedSaslMechanismError):
        said = _broker_message(exc)
        detail = f" ({said})" if "mechanism" in said else ""
        return Diagnosis(
            f"the listener does not accept the configured sasl.mechanism{detail}",
            auth=True,
            fatal=True,
            rank=_AUTH,
        )
    if isinstance(exc, ak.IllegalSaslStateError):
        return Diagnosis(
            "the broker refused the SASL exchange: the listener is not a SASL listener "
            "(check security.protocol), or it rejected the OAUTHBEARER token",
            auth=True,
            fatal=True,
            rank=_AUTH,
        )
    if isinstance(exc, ak.TopicAuthorizationFailedError):
        return Diagnosis(
            "not authorised to read the topic: the principal needs READ and DESCRIBE on it",
            auth=True,
            fatal=True,
            rank=_AUTH,
        )
    if isinstance(exc, ak.GroupAuthorizationFailedError):
        return Diagnosis(
            "not authorised to use the consumer group (group.id): the principal needs READ on it",
            auth=True,
            fatal=True,
            rank=_AUTH,
        )
    if isinstance(exc, ak.ClusterAuthorizationFailedError):
        return Diagnosis("not authorised on the cluster", auth=True, fatal=True, rank=_AUTH)
    if isinstance(exc, ssl.SSLCertVerificationError):
        what = exc.verify_message or "certificate verify failed"
        return Diagnosis(
            f"TLS: the broker's certificate failed verification: {what}; check "
            "ssl.ca.location (the CA that signed the broker's certificate) and, for a host "
            "name mismatch, the broker address or ssl.endpoint.identification.algorithm",
            auth=True,
            fatal=True,
            rank=_AUTH,
        )
    if isinstance(exc, ssl.SSLError):
        reason = str(getattr(exc, "reason", None) or "")
        alert = _tls_alert(reason)
        if alert in _CERTIFICATE_ALERTS:
            return Diagnosis(
                f"TLS: the broker rejected the connection (alert {alert!r}): it requires a "
                "client certificate it trusts; check ssl.certificate.location and "
                "ssl.key.location (certificate expired, not yet valid, or not signed by a CA "
                "the broker trusts)",
                auth=True,
                fatal=True,
                rank=_AUTH,
            )
        if alert is not None:
            return Diagnosis(
                f"TLS: the broker ended the handshake (alert {alert!r}); check the ssl.* "
                "options against the listener's TLS settings",
                fatal=True,
                rank=_PROTOCOL,
            )
        if reason in _NOT_TLS_ON_THE_OTHER_SIDE:
            return Diagnosis(
                f"TLS handshake failed ({reason}): the listener does not speak TLS; "
                f"{_PROTOCOL_HINT}",
                fatal=True,
                rank=_PROTOCOL,
            )
        # EOF in the middle of TLS and the like: a broker that went away, as far as we know.
        return Diagnosis(f"TLS connection failed ({reason or exc})", rank=_NETWORK)
    if isinstance(exc, ak.UnknownTopicOrPartitionError):
        return Diagnosis("the topic does not exist on the cluster", rank=_PROTOCOL)
    if isinstance(exc, ConnectionResetError):
        return Diagnosis(f"the broker reset the connection; {_PROTOCOL_HINT}", rank=_NETWORK)
    if isinstance(exc, asyncio.IncompleteReadError):
        if (exc.expected or 0) > _MAX_SANE_FRAME:
            # Bytes that are no Kafka frame: typically a TLS alert read as a frame length.
            return Diagnosis(
                f"the broker's answer is not Kafka's protocol; {_PROTOCOL_HINT}",
                fatal=True,
                rank=_PROTOCOL,
            )
        return Diagnosis("the broker closed the connection", rank=_NETWORK)
    if isinstance(exc, ConnectionRefusedError):
        return Diagnosis(
            f"connection refused ({exc.strerror or exc}): is the broker running, and are "
            "bootstrap.servers / brokers right?",
            rank=_NETWORK,
        )
    if isinstance(exc, TimeoutError | ak.KafkaTimeoutError | ak.RequestTimedOutError):
        return Diagnosis("the broker did not answer in time (request.timeout.ms)", rank=_NETWORK)
    if isinstance(exc, OSError):
        return Diagnosis(f"cannot connect: {exc}", rank=_NETWORK)
    return None


def _most_specific(found: list[Diagnosis]) -> Diagnosis:
    # The latest of the most specific: a refused connection now says more than the closed
    # connection that started an outage.
    return max(reversed(found), key=lambda d: d.rank)


def diagnose(exc: BaseException) -> Diagnosis:
    """The most specific meaning found in ``exc`` and its causes."""
    found = [d for d in map(_diagnose_one, _chain(exc)) if d is not None]
    if found:
        return _most_specific(found)
    if isinstance(exc, ak.KafkaError):
        text = str(exc)
        if "Unable to bootstrap" in text:
            return Diagnosis(
                "cannot connect to any of the bootstrap servers (bootstrap.servers / brokers)",
                rank=_GENERIC,
            )
        return Diagnosis(f"Kafka client error: {text}", rank=_GENERIC)
    return Diagnosis(f"{type(exc).__name__}: {exc}", rank=_GENERIC)


def translate(
    exc: BaseException, *, context: str, watch: ConnectionWatch | None = None
) -> KafkaError:
    """The ingress error for ``exc``, explained by what ``watch`` saw if that says more.

    ``context`` starts the message, e.g. ``"subscription sub_1: cannot consume kafka://c/t"``.
    """
    found = diagnose(exc)
    if watch is not None:
        seen = watch.best()
        if seen is not None and seen.rank > found.rank:
            found = seen
    return found.error(context)


def certificate_problem(
    security: SecuritySettings, *, now: dt.datetime | None = None
) -> str | None:
    """Why the broker will refuse the client certificate of ``security``, if its dates say so.

    A broker answers an expired client certificate with the same TLS alert as an untrusted
    one ("certificate unknown"), so the dates are checked here, where they can be named.
    Unreadable files are :func:`adapter.kafka.security.build_ssl_context`'s to report.
    """
    path = security.ssl_certificate_location
    if not security.uses_ssl or path is None:
        return None
    try:
        with open(path, "rb") as f:
            certificate = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError):
        return None
    now = now or dt.datetime.now(dt.UTC)
    not_before = certificate.not_valid_before_utc
    not_after = certificate.not_valid_after_utc
    if now > not_after:
        return (
            f"TLS: the client certificate in ssl.certificate.location expired on "
            f"{not_after:%Y-%m-%d %H:%M:%S} UTC; renew it (the file is read again on the "
            "next attempt)"
        )
    if now < not_before:
        return (
            f"TLS: the client certificate in ssl.certificate.location is not valid before "
            f"{not_before:%Y-%m-%d %H:%M:%S} UTC (check this machine's clock)"
        )
    return None


# --------------------------------------------------------------------------------------------
# Watching what aiokafka logs


# Messages aiokafka logs without an exception object, mapped to the failure they mean.
_LOGGED_WITHOUT_EXCEPTION: dict[str, Diagnosis] = {
    # aiokafka does not read the broker's reply to a rejected OAUTHBEARER token: the handshake
    # "succeeds", the broker then answers the first request with an empty error response, and
    # the client is left without any broker to talk to, for good.
    "No broker metadata found in MetadataResponse -- ignoring.": Diagnosis(
        "the broker answered without any broker metadata, which is how a SASL exchange it "
        "rejected (typically an OAUTHBEARER token) shows through the Kafka client",
        auth=True,
        rank=_PROTOCOL,
        # Right after bootstrap the client is left without any broker for good; a running
        # client keeps the brokers it knows (a restarting broker can answer like this).
        fatal_on_start=True,
    ),
    "Topic %s is not authorized for this client": Diagnosis(
        "not authorised to read the topic: the principal needs READ and DESCRIBE on it",
        auth=True,
        fatal=True,
        rank=_AUTH,
    ),
    "Not authorized to read from topic %s.": Diagnosis(
        "not authorised to read the topic: the principal needs READ and DESCRIBE on it",
        auth=True,
        fatal=True,
        rank=_AUTH,
    ),
    "Topic %s not found in cluster metadata": Diagnosis(
        "the topic does not exist on the cluster (and the broker does not create it)",
        rank=_PROTOCOL,
    ),
}


class ConnectionWatch:
    """Failures aiokafka logged (and is retrying) for the consumer started in this context.

    ``grace_s``: how long failures must go on before :meth:`ongoing` reports them, so the
    transient errors of a normal start or rebalance are not shown. ``quiet_s``: a gap without
    failures this long ends an episode (aiokafka retries about every ``retry.backoff.ms``).
    """

    def __init__(
        self,
        context: str,
        *,
        grace_s: float = 2.0,
        quiet_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.context = context
        self._grace_s = grace_s
        self._quiet_s = quiet_s
        self._clock = clock
        self._recent: deque[tuple[float, Diagnosis]] = deque(maxlen=64)
        self._fatal: Diagnosis | None = None
        self._start_fatal: Diagnosis | None = None
        self._episode_start: float | None = None
        self._last: float | None = None
        self._lock = threading.Lock()

    def observe(self, diagnosis: Diagnosis) -> None:
        now = self._clock()
        with self._lock:
            if self._last is None or now - self._last > self._quiet_s:
                self._episode_start = now
            self._last = now
            self._recent.append((now, diagnosis))
            if diagnosis.fatal and self._fatal is None:
                self._fatal = diagnosis
            if diagnosis.fatal_on_start and self._start_fatal is None:
                self._start_fatal = diagnosis

    def observe_exception(self, exc: BaseException) -> None:
        self.observe(diagnose(exc))

    def best(self, since: float | None = None) -> Diagnosis | None:
        """The most specific failure seen (since ``since``, a clock reading), if any."""
        with self._lock:
            found = [d for t, d in self._recent if since is None or t >= since]
        return _most_specific(found) if found else None

    def take_fatal(self, *, starting: bool = False) -> KafkaError | None:
        """A fatal failure seen since the last call, as the error to raise.

        ``starting``: the consumer has just started, so failures that only matter then
        count too.
        """
        with self._lock:
            fatal, self._fatal = self._fatal, None
            start_fatal, self._start_fatal = self._start_fatal, None
        if fatal is None and starting:
            fatal = start_fatal
        return fatal.error(self.context) if fatal is not None else None

    def ongoing(self) -> KafkaError | None:
        """The failure of an episode that has lasted ``grace_s`` and is still going on."""
        now = self._clock()
        with self._lock:
            start, last = self._episode_start, self._last
        if start is None or last is None or now - last > self._quiet_s:
            return None
        if last - start < self._grace_s:
            return None
        best = self.best(since=start)
        return best.error(self.context) if best is not None else None


_current: contextvars.ContextVar[ConnectionWatch | None] = contextvars.ContextVar(
    "kafka_connection_watch", default=None
)


class _WatchHandler(logging.Handler):
    """Hands aiokafka's logged failures to the watch of the context they were logged in."""

    def emit(self, record: logging.LogRecord) -> None:
        watch = _current.get()
        if watch is None or record.levelno < logging.WARNING:
            return
        args = record.args if isinstance(record.args, tuple) else ()
        errors = [a for a in args if isinstance(a, BaseException)]
        if record.exc_info and record.exc_info[1] is not None:
            errors.append(record.exc_info[1])
        for exc in errors:
            watch.observe_exception(exc)
        if not errors and isinstance(record.msg, str):
            known = _LOGGED_WITHOUT_EXCEPTION.get(record.msg)
            if known is not None:
                watch.observe(known)


_handler_lock = threading.Lock()
_handler: _WatchHandler | None = None


def _install_handler() -> None:
    global _handler
    with _handler_lock:
        if _handler is None:
            _handler = _WatchHandler()
            # Records pass the level check of the logger that emits them (warnings and errors
            # pass aiokafka's default level) before they reach a handler of "aiokafka".
            logging.getLogger("aiokafka").addHandler(_handler)


def watch_connections(
    context: str, *, grace_s: float = 2.0, quiet_s: float = 3.0
) -> ConnectionWatch:
    """A new watch for the Kafka clients started from now on in the calling task.

    It stays installed in the task's context (a later call replaces it); tasks created from
    then on, including aiokafka's own, report to it.
    """
    _install_handler()
    watch = ConnectionWatch(context, grace_s=grace_s, quiet_s=quiet_s)
    _current.set(watch)
    return watch
