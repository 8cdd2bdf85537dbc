"""What the admin API's reference and timestamp checks refuse, and that their messages never
quote credentials written into a reference (docs/security.md, "Secrets")."""

from __future__ import annotations

import pytest

from adapter.api.refs import check_cluster_name, parse_sink, parse_source, shown
from adapter.api.wire import parse_timestamp
from adapter.errors import ValidationError

SECRET = "SRCPASSWORD1"
ARN = "arn:aws:lambda:eu-west-1:123456789012:function:orders"


@pytest.mark.parametrize(
    ("parse", "value", "named"),
    [
        (parse_source, f"kafka://user:{SECRET}@local/t", "credentials (user:password@)"),
        (parse_source, f"kafka://{SECRET}@local/t", "credentials (user:password@)"),
        (parse_source, f"kafka://user:{SECRET}/t", "names a cluster"),
        (parse_source, f"kafka://user:pa/{SECRET}@local/t", "credentials (user:password@)"),
        (parse_source, f"user:{SECRET}@local/t", "no scheme"),
        (parse_source, f"http://user:{SECRET}@local/t", "scheme 'http'"),
        (parse_source, f"kafka://user:{SECRET}\uff03@local/t", "not a valid URI"),
        (parse_sink, f"service://user:{SECRET}@Greeter/greet", "credentials (user:password@)"),
        (parse_sink, f"service://user:{SECRET}@Greeter", "credentials (user:password@)"),
        (parse_sink, f"sqs://user:{SECRET}@queue", "scheme 'sqs'"),
        (parse_sink, f"user:{SECRET}@Greeter/greet", "no scheme"),
        (parse_sink, f"lambda://user:{SECRET}@{ARN}", "is not a Lambda function ARN"),
        (check_cluster_name, f"user:{SECRET}@local", "is not a Kafka cluster name"),
    ],
)
def test_a_reference_error_names_the_problem_but_not_the_credentials(
    parse: object, value: str, named: str
) -> None:
    with pytest.raises(ValidationError) as info:
        parse(value)  # type: ignore[operator]
    assert named in str(info.value)
    assert SECRET not in str(info.value)


def test_shown_keeps_the_host_and_path_and_masks_everything_to_the_last_at() -> None:
    assert shown("kafka://u:p@w@local/t") == "'kafka://***@local/t'"
    assert shown("u:p@local/t") == "'***@local/t'"
    assert shown("kafka://local/t") == "'kafka://local/t'"
    assert shown("x" * 400, 10) == repr("x" * 10)


def test_a_service_name_with_an_at_sign_is_written_percent_encoded() -> None:
    sink = parse_sink("service://team%40Greeter/greet")
    assert (sink.service, sink.handler) == ("team@Greeter", "greet")


def test_timestamps_are_int64_epoch_milliseconds() -> None:
    top = 2**63 - 1
    assert parse_timestamp(top) == top
    assert parse_timestamp(str(top)) == top
    assert parse_timestamp(0) == 0
    for bad in (10**30, top + 1, str(10**30), str(top + 1), "9" * 5000, -1, "\u00b2"):
        with pytest.raises(ValidationError, match=r"too large|negative|not a timestamp"):
            parse_timestamp(bad)
