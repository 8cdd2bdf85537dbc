"""A real Apache Kafka broker (KRaft, broker and controller in one JVM) for tests and `make dev`.

The jars come from Maven Central through ``infra/kafka/pom.xml`` (``make kafka-jars``). Each
:class:`KafkaBroker` is an independent single-node cluster: its own random cluster ID, its own
work directory (storage, config, log) and its own free loopback ports, so several can run at
once. The broker always has a ``PLAINTEXT`` client listener (also used between broker and
controller) and a ``CONTROLLER`` listener; :class:`ListenerSpec` adds more (SASL, SSL).

    broker = KafkaBroker(
        extra_listeners=[
            ListenerSpec(
                "SASL",
                "SASL_PLAINTEXT",
                {
                    "sasl.enabled.mechanisms": "SCRAM-SHA-512",
                    "scram-sha-512.sasl.jaas.config":
                        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                },
            )
        ],
        scram_users=[("SCRAM-SHA-512", "alice", "alice-secret")],
    )
    with broker:
        broker.listeners["SASL"]  # "127.0.0.1:41234"

JVM system properties the broker needs (e.g. ``org.apache.kafka.sasl.oauthbearer.allowed.urls``
for OAUTHBEARER) go in ``jvm_options`` as ``-Dname=value``.

Errors: ``start()``/``restart()`` raise :class:`~adapter.errors.LocalStackError` when the broker
cannot be started, with the first errors and the tail of its log; invalid arguments raise
:class:`~adapter.errors.ConfigError` before anything is started.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import enum
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Final, Self

from adapter.errors import ConfigError, LocalStackError

__all__ = [
    "JARS_ENV_VAR",
    "KafkaBroker",
    "ListenerSpec",
    "default_jars_dir",
    "main",
]

log = logging.getLogger(__name__)

JARS_ENV_VAR: Final = "KAFKA_INGRESS_KAFKA_LIBS"

_NODE_ID: Final = 1
_HOST: Final = "127.0.0.1"
_CLIENT_LISTENER: Final = "PLAINTEXT"
_CONTROLLER_LISTENER: Final = "CONTROLLER"
_SECURITY_PROTOCOLS: Final = frozenset({"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"})
_SCRAM_MECHANISMS: Final = frozenset({"SCRAM-SHA-256", "SCRAM-SHA-512"})
_LISTENER_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_KAFKA_JAR = re.compile(r"kafka_2\.13-(?P<version>[0-9][^-]*)\.jar")
_LOG_TAIL_LINES: Final = 40
_PORT_ATTEMPTS: Final = 3

# Derived from the ports and directories the launcher picks; letting callers override them
# would break the launcher's own bookkeeping (readiness probe, restart on the same ports).
_RESERVED_PROPERTIES: Final = frozenset(
    {
        "process.roles",
        "node.id",
        "controller.quorum.voters",
        "controller.quorum.bootstrap.servers",
        "controller.listener.names",
        "inter.broker.listener.name",
        "listeners",
        "advertised.listeners",
        "listener.security.protocol.map",
        "log.dirs",
        "log.dir",
        "metadata.log.dir",
    }
)

# Tuned for one-node test clusters: every internal topic fits on one replica, groups start
# without the 3 s join delay, and internal topics have few partitions so the first consumer
# group (which creates __consumer_offsets) does not wait for 50 partitions to be created.
_DEFAULT_PROPERTIES: Final[Mapping[str, str]] = {
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "auto.create.topics.enable": "true",
    "delete.topic.enable": "true",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "5",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "5",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    # After a SIGKILL the restarted controller only accepts the broker's new registration
    # once the old session has expired: 9 s by default, which would dominate fault tests.
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "3000",
    "log.segment.bytes": str(16 * 1024 * 1024),
    "num.network.threads": "2",
    "num.io.threads": "4",
    "background.threads": "4",
    "num.recovery.threads.per.data.dir": "1",
}

# C1-only JIT and the serial collector: startup dominates a test broker's life, and on a
# two-core machine the parallel GC and C2 compiler threads compete with the broker itself.
_DEFAULT_JVM_OPTIONS: Final = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

_LOG4J2_PROPERTIES: Final = """\
status = warn
# Log4j's own hook would stop logging before the broker has finished its shutdown.
shutdownHook = disable
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
# The full config dump at every start buries the lines that explain a failure.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""


@dataclass(frozen=True)
class ListenerSpec:
    """An extra client listener on a free loopback port.

    ``properties`` are per-listener broker settings given without their prefix; the launcher
    writes them as ``listener.name.<name lower-case>.<key>``, e.g. ``{"sasl.enabled.mechanisms":
    "SCRAM-SHA-512"}``. ``port=None`` lets the launcher pick a free port.
    """

    name: str
    security_protocol: str
    properties: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None

    def __post_init__(self) -> None:
        if not _LISTENER_NAME.fullmatch(self.name):
            raise ConfigError(
                f"listener name {self.name!r}: use upper-case letters, digits and '_' (e.g. 'SASL')"
            )
        if self.name in (_CLIENT_LISTENER, _CONTROLLER_LISTENER):
            raise ConfigError(f"listener name {self.name!r} is reserved by the launcher")
        if self.security_protocol not in _SECURITY_PROTOCOLS:
            raise ConfigError(
                f"listener {self.name}: security_protocol {self.security_protocol!r} is not one"
                f" of {sorted(_SECURITY_PROTOCOLS)}"
            )
        _check_port(f"listener {self.name}: port", self.port)


class _State(enum.Enum):
    STOPPED = "stopped"
    RUNNING = "running"


class _PortTaken(Exception):
    """The broker exited because one of its auto-picked ports was grabbed in the meantime."""


# Brokers still running when the interpreter exits normally are stopped, so an aborted test
# session or a crashed `make dev` does not leave JVMs behind.
_live_brokers: weakref.WeakSet[KafkaBroker] = weakref.WeakSet()


@atexit.register
def _stop_live_brokers() -> None:
    for broker in list(_live_brokers):
        with contextlib.suppress(LocalStackError):
            broker.stop()


def default_jars_dir() -> Path:
    """``$KAFKA_INGRESS_KAFKA_LIBS`` if set, else ``<repo root>/.cache/kafka/libs``."""
    configured = os.environ.get(JARS_ENV_VAR)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / ".cache" / "kafka" / "libs"


class KafkaBroker:
    """One single-node KRaft cluster in a child JVM. Not thread-safe.

    ``work_dir=None`` uses a fresh temporary directory, removed by :meth:`stop` unless
    ``keep_work_dir`` is set; a given ``work_dir`` is never removed, and storage already
    formatted there is reused (so `make dev` can keep its topics across runs).
    """

    def __init__(
        self,
        *,
        jars_dir: Path | None = None,
        work_dir: Path | None = None,
        keep_work_dir: bool = False,
        heap_mb: int = 512,
        port: int | None = None,
        extra_listeners: Sequence[ListenerSpec] = (),
        extra_properties: Mapping[str, str] | None = None,
        jvm_options: Sequence[str] = (),
        scram_users: Sequence[tuple[str, str, str]] = (),
        java: str | None = None,
    ) -> None:
        if heap_mb < 128:
            raise ConfigError(f"heap_mb={heap_mb}: the broker needs at least 128 MiB")
        _check_port("port", port)
        names = [spec.name for spec in extra_listeners]
        if len(set(names)) != len(names):
            raise ConfigError(f"extra_listeners: listener names must be unique, got {names}")
        properties = dict(extra_properties or {})
        reserved = sorted(_RESERVED_PROPERTIES.intersection(properties))
        if reserved:
            raise ConfigError(
                f"extra_properties: {reserved} are set by the launcher; use `port` or"
                " `extra_listeners` instead"
            )
        for mechanism, name, password in scram_users:
            if mechanism not in _SCRAM_MECHANISMS:
                raise ConfigError(
                    f"scram_users: mechanism {mechanism!r} is not one of"
                    f" {sorted(_SCRAM_MECHANISMS)}"
                )
            # The storage tool parses `[name=...,password=...]` without an escape syntax.
            for label, value in (("name", name), ("password", password)):
                if not value or re.search(r'[\s,=\[\]"]', value):
                    raise ConfigError(
                        f"scram_users: {label} {value!r} must be non-empty and free of"
                        ' whitespace and ,=[]"'
                    )

        self._jars_dir = jars_dir
        self._given_work_dir = work_dir
        self._keep_work_dir = keep_work_dir
        self._heap_mb = heap_mb
        self._fixed_port = port
        self._extra_listeners = tuple(extra_listeners)
        self._extra_properties = properties
        self._jvm_options = tuple(jvm_options)
        self._scram_users = tuple(scram_users)
        self._java = java

        self._state = _State.STOPPED
        self._process: subprocess.Popen[bytes] | None = None
        self._work_dir: Path | None = None
        self._ports: dict[str, int] = {}
        self._cluster_id: str | None = None
        self._kafka_version: str | None = None
        self.startup_seconds: float | None = None
        """Wall time of the last successful start or restart (JVM launch to first metadata)."""

    def __repr__(self) -> str:
        where = self.listeners.get(_CLIENT_LISTENER, "-") if self._ports else "-"
        return f"<KafkaBroker {self._state.value} {where} pid={self.pid}>"

    # -- public state -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the JVM is alive (it may have died since the last call)."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the PLAINTEXT client listener."""
        return self._address(_CLIENT_LISTENER)

    @property
    def listeners(self) -> dict[str, str]:
        """Client listener name -> ``host:port`` (the controller listener is not included)."""
        return {
            name: f"{_HOST}:{port}"
            for name, port in self._ports.items()
            if name != _CONTROLLER_LISTENER
        }

    @property
    def controller_address(self) -> str:
        return self._address(_CONTROLLER_LISTENER)

    @property
    def cluster_id(self) -> str:
        if self._cluster_id is None:
            raise LocalStackError("the Kafka broker has not been started")
        return self._cluster_id

    @property
    def kafka_version(self) -> str:
        """Version of the broker jars, e.g. ``"4.4.0"``."""
        if self._kafka_version is None:
            self._kafka_version = _kafka_version(self._resolve_jars_dir())
        return self._kafka_version

    @property
    def work_dir(self) -> Path:
        if self._work_dir is None:
            raise LocalStackError("the Kafka broker has not been started")
        return self._work_dir

    @property
    def log_path(self) -> Path:
        return self.work_dir / "broker.log"

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        if self._work_dir is None:
            return ""
        return _tail(self.log_path, lines)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """Format storage if needed, launch the JVM and return once it serves metadata."""
        if self._state is _State.RUNNING:
            raise LocalStackError(f"{self!r} has been started; stop() it first")
        deadline = time.monotonic() + timeout
        java = self._resolve_java()
        jars = self._resolve_jars_dir()
        self._kafka_version = _kafka_version(jars)
        # Left over by a failed restart(): start() means a fresh cluster, as after stop().
        self._cleanup_work_dir()
        self._work_dir = self._prepare_work_dir()
        try:
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                self._pick_ports()
                self._write_config()
                if attempt == 1:
                    self._format_storage(java, jars, deadline)
                try:
                    self._launch_and_wait(java, jars, deadline)
                except _PortTaken:
                    self._kill_process()
                    if self._fixed_ports_only() or attempt == _PORT_ATTEMPTS:
                        raise LocalStackError(
                            "the Kafka broker could not bind its ports"
                            f" {sorted(self._ports.values())}\n{self._log_excerpt()}"
                        ) from None
                    log.info("a picked port was taken before the broker bound it; retrying")
                    continue
                return
        except BaseException:
            self._kill_process()
            self._cleanup_work_dir()
            raise

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the broker, SIGKILL it after ``timeout`` s, then remove its temp dir.

        Safe to call when the broker is not running or has died on its own.
        """
        try:
            self._terminate(timeout)
        finally:
            self._cleanup_work_dir()

    def restart(self, timeout: float = 60, *, hard: bool = False) -> None:
        """Stop the JVM (SIGKILL when ``hard``) and start it again: same ports, same data."""
        if self._work_dir is None or not self._ports:
            raise LocalStackError(f"{self!r} was never started; call start() instead")
        if hard:
            self._kill_process()
        else:
            self._terminate(min(timeout, 20))
        deadline = time.monotonic() + timeout
        try:
            self._launch_and_wait(self._resolve_java(), self._resolve_jars_dir(), deadline)
        except _PortTaken:
            self._kill_process()
            raise LocalStackError(
                f"the Kafka broker could not re-bind its ports {sorted(self._ports.values())}"
                f" on restart\n{self._log_excerpt()}"
            ) from None
        except BaseException:
            self._kill_process()
            raise

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------

    def _address(self, listener: str) -> str:
        port = self._ports.get(listener)
        if port is None:
            raise LocalStackError(f"the Kafka broker has no {listener} listener yet; start() it")
        return f"{_HOST}:{port}"

    def _resolve_java(self) -> str:
        if self._java is not None:
            if not os.access(self._java, os.X_OK):
                raise LocalStackError(f"java={self._java!r} is not an executable file")
            return self._java
        java_home = os.environ.get("JAVA_HOME")
        if java_home and (Path(java_home) / "bin" / "java").is_file():
            return str(Path(java_home) / "bin" / "java")
        found = shutil.which("java")
        if found is None:
            raise LocalStackError(
                "`java` is not on PATH (and JAVA_HOME is unset): the Kafka broker needs Java 17+,"
                " e.g. `apt-get install openjdk-17-jre-headless`"
            )
        return found

    def _resolve_jars_dir(self) -> Path:
        jars = self._jars_dir if self._jars_dir is not None else default_jars_dir()
        if not any(jars.glob("kafka_2.13-*.jar")):
            raise LocalStackError(
                f"no Kafka broker jars in {jars}: run `make kafka-jars`"
                f" (or point {JARS_ENV_VAR} at a directory holding them)"
            )
        return jars

    def _prepare_work_dir(self) -> Path:
        if self._given_work_dir is not None:
            self._given_work_dir.mkdir(parents=True, exist_ok=True)
            return self._given_work_dir
        return Path(tempfile.mkdtemp(prefix="kafka-ingress-broker-"))

    def _cleanup_work_dir(self) -> None:
        work_dir, self._work_dir = self._work_dir, None
        self._ports = {}
        self._cluster_id = None
        if work_dir is None or self._given_work_dir is not None:
            return
        if self._keep_work_dir:
            log.info("kept Kafka broker work dir %s", work_dir)
            return
        shutil.rmtree(work_dir, ignore_errors=True)

    def _fixed_ports_only(self) -> bool:
        return self._fixed_port is not None and all(
            spec.port is not None for spec in self._extra_listeners
        )

    def _pick_ports(self) -> None:
        wanted: dict[str, int | None] = {
            _CLIENT_LISTENER: self._fixed_port,
            _CONTROLLER_LISTENER: None,
        }
        wanted.update({spec.name: spec.port for spec in self._extra_listeners})
        free = _free_ports(sum(port is None for port in wanted.values()))
        self._ports = {
            name: port if port is not None else next(free) for name, port in wanted.items()
        }

    def _write_config(self) -> None:
        work_dir = self.work_dir
        ports = self._ports
        protocols = {_CLIENT_LISTENER: "PLAINTEXT", _CONTROLLER_LISTENER: "PLAINTEXT"}
        protocols.update({spec.name: spec.security_protocol for spec in self._extra_listeners})
        client_names = [name for name in ports if name != _CONTROLLER_LISTENER]
        properties: dict[str, str] = {
            "process.roles": "broker,controller",
            "node.id": str(_NODE_ID),
            "controller.quorum.voters": f"{_NODE_ID}@{_HOST}:{ports[_CONTROLLER_LISTENER]}",
            "controller.listener.names": _CONTROLLER_LISTENER,
            "inter.broker.listener.name": _CLIENT_LISTENER,
            "listeners": ",".join(f"{name}://{_HOST}:{port}" for name, port in ports.items()),
            "advertised.listeners": ",".join(
                f"{name}://{_HOST}:{ports[name]}" for name in client_names
            ),
            "listener.security.protocol.map": ",".join(
                f"{name}:{protocols[name]}" for name in ports
            ),
            "log.dirs": str(work_dir / "data"),
            **_DEFAULT_PROPERTIES,
        }
        for spec in self._extra_listeners:
            prefix = f"listener.name.{spec.name.lower()}."
            properties.update({prefix + key: value for key, value in spec.properties.items()})
        properties.update(self._extra_properties)
        (work_dir / "server.properties").write_text(
            "".join(f"{key}={_escape_property(value)}\n" for key, value in properties.items()),
            encoding="utf-8",
        )
        (work_dir / "log4j2.properties").write_text(_LOG4J2_PROPERTIES, encoding="utf-8")

    def _java_command(self, java: str, jars: Path, main_class: str, *args: str) -> list[str]:
        return [
            java,
            f"-Xmx{self._heap_mb}m",
            *_DEFAULT_JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.work_dir}",
            *self._jvm_options,
            "-cp",
            f"{jars}{os.sep}*",
            main_class,
            *args,
        ]

    def _format_storage(self, java: str, jars: Path, deadline: float) -> None:
        meta = self.work_dir / "data" / "meta.properties"
        if meta.is_file():
            self._cluster_id = _read_cluster_id(meta)
            return
        cluster_id = _random_cluster_id()
        args = [
            "format",
            f"--cluster-id={cluster_id}",
            f"--config={self.work_dir / 'server.properties'}",
        ]
        for mechanism, name, password in self._scram_users:
            args.append(f"--add-scram={mechanism}=[name={name},password={password}]")
        command = self._java_command(java, jars, "kafka.tools.StorageTool", *args)
        with self.log_path.open("ab") as out:
            out.write(b"=== kafka-storage format\n")
            out.flush()
            try:
                result = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=max(deadline - time.monotonic(), 1),
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise LocalStackError(
                    f"formatting Kafka storage timed out\n{self._log_excerpt()}"
                ) from None
            except OSError as exc:
                raise LocalStackError(f"cannot run {java}: {exc}") from exc
        if result.returncode != 0:
            raise LocalStackError(
                f"formatting Kafka storage failed (exit {result.returncode})\n{self._log_excerpt()}"
            )
        self._cluster_id = cluster_id

    def _launch_and_wait(self, java: str, jars: Path, deadline: float) -> None:
        command = self._java_command(
            java, jars, "kafka.Kafka", str(self.work_dir / "server.properties")
        )
        began = time.monotonic()
        with self.log_path.open("ab") as out:
            out.write(f"=== kafka.Kafka {self.kafka_version} {self._ports}\n".encode())
            out.flush()
            # A session of its own keeps a terminal's Ctrl-C (sent to the foreground process
            # group) from killing the broker before the launcher stops it cleanly.
            try:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise LocalStackError(f"cannot run {java}: {exc}") from exc
        self._state = _State.RUNNING
        _live_brokers.add(self)
        self._wait_until_serving(deadline)
        self.startup_seconds = time.monotonic() - began
        log.info(
            "Kafka %s broker ready at %s in %.1f s (pid %s, log %s)",
            self.kafka_version,
            self.bootstrap_servers,
            self.startup_seconds,
            self.pid,
            self.log_path,
        )

    def _wait_until_serving(self, deadline: float) -> None:
        process = self._process
        assert process is not None
        port = self._ports[_CLIENT_LISTENER]
        last_problem = "no answer yet"
        while True:
            if process.poll() is not None:
                tail = self.log_tail()
                if "Address already in use" in tail or "BindException" in tail:
                    raise _PortTaken
                raise LocalStackError(
                    f"the Kafka broker exited with code {process.returncode} before it was"
                    f" ready\n{self._log_excerpt()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LocalStackError(
                    f"the Kafka broker did not serve metadata on {_HOST}:{port} in time"
                    f" (last probe: {last_problem})\n{self._log_excerpt()}"
                )
            try:
                cluster_id, broker_ids = _probe_metadata(_HOST, port, min(remaining, 2.0))
            except (OSError, _ProtocolError) as exc:
                last_problem = f"{type(exc).__name__}: {exc}"
            else:
                if cluster_id is not None and cluster_id != self._cluster_id:
                    # Someone else's broker owns the port we picked.
                    raise _PortTaken
                if _NODE_ID in broker_ids:
                    return
                last_problem = "broker not registered yet"
            # Doubles as the poll interval and as an early exit if the JVM dies.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=min(0.1, max(deadline - time.monotonic(), 0)))

    def _terminate(self, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        try:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log.warning(
                        "Kafka broker pid %s ignored SIGTERM for %s s; killing it",
                        process.pid,
                        timeout,
                    )
                    process.kill()
                    process.wait(timeout=10)
        finally:
            self._forget_process()

    def _kill_process(self) -> None:
        process = self._process
        if process is None:
            return
        try:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        finally:
            self._forget_process()

    def _forget_process(self) -> None:
        self._process = None
        self._state = _State.STOPPED
        _live_brokers.discard(self)

    def _log_excerpt(self) -> str:
        if self._work_dir is None:
            return ""
        return _excerpt(self.log_path)


# -- helpers ----------------------------------------------------------------------------------


def _check_port(label: str, port: int | None) -> None:
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"{label}={port}: must be 1..65535, or None for a free port")


def _kafka_version(jars: Path) -> str:
    versions = sorted(
        match["version"]
        for jar in jars.glob("kafka_2.13-*.jar")
        if (match := _KAFKA_JAR.fullmatch(jar.name))
    )
    if len(versions) != 1:
        # Maven's copy-dependencies never deletes, so a version bump leaves the old jars.
        raise LocalStackError(
            f"{jars} holds Kafka jars of several versions {versions}: delete it and run"
            " `make kafka-jars` again"
        )
    return versions[0]


def _free_ports(count: int) -> Iterator[int]:
    # All sockets stay bound until every port is chosen, so one call never repeats a port.
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((_HOST, 0))
            ports.append(sock.getsockname()[1])
    return iter(ports)


def _random_cluster_id() -> str:
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # Kafka itself never issues IDs starting with '-' since they read as CLI options.
        if not cluster_id.startswith("-"):
            return cluster_id


def _read_cluster_id(meta: Path) -> str:
    for line in meta.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip()
    raise LocalStackError(f"{meta} has no cluster.id; delete {meta.parent} to start afresh")


def _escape_property(value: str) -> str:
    # Kafka reads server.properties as ISO-8859-1, so anything beyond ASCII goes as \uXXXX.
    escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    utf16 = escaped.encode("utf-16-be")
    units = struct.unpack(f">{len(utf16) // 2}H", utf16)
    return "".join(chr(unit) if unit < 0x80 else f"\\u{unit:04x}" for unit in units)


def _read_log_end(path: Path) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - 256 * 1024, 0))
            data = f.read()
    except FileNotFoundError:
        return ["(no log written)"]
    return data.decode("utf-8", "replace").splitlines()


def _tail(path: Path, lines: int) -> str:
    return "\n".join(_read_log_end(path)[-lines:])


_ERROR_LINE = re.compile(r"(\[[^]]+\] (ERROR|FATAL) |Exception in thread |Error: )")
_RECORD_START = re.compile(r"\[\d{4}-")


def _excerpt(path: Path) -> str:
    """The first errors of the latest run, then the log's tail.

    A broker that fails at startup logs the cause once and then a hundred lines of orderly
    shutdown, so the tail alone rarely says what went wrong.
    """
    lines = _read_log_end(path)
    markers = [i for i, line in enumerate(lines) if line.startswith("=== ")]
    run = lines[markers[-1] :] if markers else lines
    errors: list[str] = []
    for i, line in enumerate(run):
        if len(errors) >= 3:
            break
        if _ERROR_LINE.match(line):
            block = [line]
            for following in run[i + 1 : i + 5]:
                if _RECORD_START.match(following):
                    break
                block.append(following)
            errors.append("\n".join(block))
    parts = []
    if errors:
        parts.append(f"--- first errors in {path} ---\n" + "\n".join(errors))
    parts.append(f"--- last lines of {path} ---\n" + "\n".join(lines[-_LOG_TAIL_LINES:]))
    return "\n".join(parts)


# -- a minimal Kafka protocol client for the readiness probe ---------------------------------
#
# Readiness is "the broker answers a Metadata request listing itself": the port being open is
# not enough, since a KRaft broker accepts connections before it has caught up with the
# metadata log. A raw socket keeps start() synchronous and usable from inside an event loop.

_API_METADATA: Final = 3
_API_VERSIONS: Final = 18
# Metadata v4..v8 share the non-flexible layout parsed below; Kafka 4.x dropped v0..v3.
_METADATA_VERSIONS: Final = range(4, 9)


class _ProtocolError(Exception):
    pass


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self._data, self._pos)
        self._pos += struct.calcsize(fmt)
        return int(value)

    def int16(self) -> int:
        return self._take(">h")

    def int32(self) -> int:
        return self._take(">i")

    def string(self) -> str | None:
        length = self.int16()
        if length < 0:
            return None
        raw = self._data[self._pos : self._pos + length]
        self._pos += length
        return raw.decode("utf-8")


def _request(
    sock: socket.socket, api_key: int, version: int, correlation: int, body: bytes
) -> _Reader:
    client_id = b"kafka-ingress-probe"
    header = struct.pack(">hhih", api_key, version, correlation, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exactly(sock, 4))[0]
    reader = _Reader(_recv_exactly(sock, size))
    if reader.int32() != correlation:
        raise _ProtocolError("response correlation id does not match the request")
    return reader


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise _ProtocolError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


def _probe_metadata(host: str, port: int, timeout: float) -> tuple[str | None, set[int]]:
    """Return the cluster ID and broker IDs the broker at ``host:port`` reports."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            versions = _request(sock, _API_VERSIONS, 0, 1, b"")
            error = versions.int16()
            metadata_range: tuple[int, int] | None = None
            for _ in range(versions.int32()):
                api_key, low, high = versions.int16(), versions.int16(), versions.int16()
                if api_key == _API_METADATA:
                    metadata_range = (low, high)
            if error != 0 or metadata_range is None:
                raise _ProtocolError(f"ApiVersions failed (error code {error})")
            usable = [v for v in _METADATA_VERSIONS if metadata_range[0] <= v <= metadata_range[1]]
            if not usable:
                raise _ProtocolError(f"broker supports Metadata {metadata_range} only")
            version = usable[-1]
            # Empty topic list (not null, which would mean all topics), no auto-creation;
            # v8 adds the two include_*_authorized_operations flags.
            body = struct.pack(">i?", 0, False) + (b"\x00\x00" if version >= 8 else b"")
            metadata = _request(sock, _API_METADATA, version, 2, body)
            metadata.int32()  # throttle_time_ms
            broker_ids = set()
            for _ in range(metadata.int32()):
                broker_ids.add(metadata.int32())
                metadata.string()  # host
                metadata.int32()  # port
                metadata.string()  # rack
            return metadata.string(), broker_ids
    except (struct.error, UnicodeDecodeError) as exc:
        raise _ProtocolError(f"malformed response: {exc}") from exc


# -- `python -m adapter.local.kafka` ----------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Start one broker, print its bootstrap address, stop it on SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m adapter.local.kafka",
        description="Run a local single-node Kafka broker until interrupted.",
    )
    parser.add_argument("--port", type=int, help="PLAINTEXT port (default: a free one)")
    parser.add_argument(
        "--work-dir", type=Path, help="keep storage here across runs (default: a temp dir)"
    )
    parser.add_argument("--heap-mb", type=int, default=512)
    parser.add_argument("--timeout", type=float, default=60, help="startup timeout in seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    # Installed before start() so a Ctrl-C during startup still ends in a clean stop().
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        broker = KafkaBroker(port=args.port, work_dir=args.work_dir, heap_mb=args.heap_mb)
        broker.start(timeout=args.timeout)
    except (ConfigError, LocalStackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(broker.bootstrap_servers, flush=True)
        print(
            f"Kafka {broker.kafka_version} on {broker.bootstrap_servers} (pid {broker.pid},"
            f" log {broker.log_path}); Ctrl-C stops it",
            file=sys.stderr,
        )
        while not stop_requested.wait(timeout=1.0):
            if not broker.running:
                print(f"error: the broker died\n{broker.log_tail()}", file=sys.stderr)
                return 1
        return 0
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
