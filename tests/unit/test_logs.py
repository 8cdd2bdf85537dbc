"""Log formats: ISO 8601 text lines, JSON lines with the record's context, secrets masked."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from adapter.config import load_settings
from adapter.errors import ConfigError
from adapter.invokers.base import InvocationRequest, Outcome
from adapter.logs import JsonFormatter, SecretMaskingFilter, TextFormatter, configure_logging
from adapter.masking import forget_secrets, remember_secret
from adapter.testing import record
from tests.unit.test_runner import P0, SUB, TOPIC, running, subscribed, until

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+00:00 ")


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    """A logger writing through ``formatter`` and the masking filter into a buffer."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(SecretMaskingFilter())
    logger = logging.getLogger(f"test.logs.{id(out)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_text_lines_start_with_an_iso_8601_time_with_date_and_zone() -> None:
    logger, out = capture(TextFormatter())
    logger.warning("disk %s", "full")
    line = out.getvalue()
    assert _ISO.match(line), line
    assert line.rstrip().endswith(f"WARNING {logger.name}: disk full")


def test_configure_logging_json_writes_one_object_a_line_to_stderr(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("adapter.test").info("hello %d", 7)
    logging.getLogger("adapter.test").debug("not at INFO")
    (entry,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert entry["level"] == "INFO"
    assert entry["logger"] == "adapter.test"
    assert entry["message"] == "hello 7"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+00:00", entry["time"])


def test_json_lines_carry_the_fields_given_with_extra() -> None:
    logger, out = capture(JsonFormatter())
    logger.info(
        "done",
        extra={"subscription": "sub_a", "partition": 3, "offset": 42, "invocation_id": "inv_1"},
    )
    logger.info("no context")
    first, second = lines(out)
    assert first["subscription"] == "sub_a"
    assert (first["partition"], first["offset"], first["invocation_id"]) == (3, 42, "inv_1")
    assert "subscription" not in second
    assert "offset" not in second


def test_a_planted_secret_is_masked_in_json_lines_and_their_tracebacks() -> None:
    secret = "pl4nted-S3cret-value-0123"
    remember_secret(secret)
    try:
        logger, out = capture(JsonFormatter())
        logger.warning("connecting with password=%s to %s", secret, "broker")
        try:
            raise RuntimeError(f"rejected token {secret}")
        except RuntimeError:
            logger.exception("failed for sasl.password=%s", secret)
        text = out.getvalue()
        assert secret not in text
        first, second = lines(out)  # still valid JSON after masking
        assert "***" in first["message"]
        assert "RuntimeError" in second["exception"]
        assert "***" in second["exception"]
    finally:
        forget_secrets()


def test_log_format_comes_from_the_file_or_the_environment(tmp_path: Any) -> None:
    assert load_settings(env={}).log_format == "text"
    assert load_settings(env={"KAFKA_INGRESS_LOG_FORMAT": "json"}).log_format == "json"
    config = tmp_path / "k.toml"
    config.write_text('log-format = "json"\n')
    assert load_settings(config, env={}).log_format == "json"
    with pytest.raises(ConfigError, match="log-format"):
        load_settings(env={"KAFKA_INGRESS_LOG_FORMAT": "yaml"})


async def test_engine_lines_name_the_record_and_its_invocation() -> None:
    logger, out = capture(JsonFormatter())
    dispatcher_logger = logging.getLogger("adapter.engine.dispatcher")
    saved = dispatcher_logger.handlers[:], dispatcher_logger.propagate
    dispatcher_logger.handlers[:] = logger.handlers
    dispatcher_logger.propagate = False
    dispatcher_logger.setLevel(logging.INFO)

    def respond(request: InvocationRequest) -> Outcome:
        # Runs inside the invocation's task, as an invoker's own log lines do.
        dispatcher_logger.info("calling the handler")
        return Outcome.terminal("handler said no")

    try:
        async with running(respond=respond) as h:
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, 5)])
            await until(lambda: h.committed(P0) == 6, what="commit of the failed record")
            trace_id = h.invoker.calls[0].headers["traceparent"][3:35]
    finally:
        dispatcher_logger.handlers[:], dispatcher_logger.propagate = saved
    entries = lines(out)
    calling = next(e for e in entries if e["message"] == "calling the handler")
    failed = next(e for e in entries if "handler said no" in e["message"])
    for entry in (calling, failed):
        assert entry["subscription"] == SUB.id
        assert entry["topic"] == TOPIC
        assert (entry["partition"], entry["offset"]) == (0, 5)
        assert entry["invocation_id"] == h.inv_id(0, 5)
    assert calling["trace_id"] == trace_id
