"""Retry policy: backoff shape, jitter, Retry-After, giving up, and option parsing."""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.engine.retry import OPTION_KEYS, RetryAbandoned, RetryPolicy, until_ok
from adapter.errors import ConfigError, StoreError

PROPERTY = settings(max_examples=100, deadline=None, database=None)

NO_JITTER = RetryPolicy(initial_interval=0.1, multiplier=2.0, max_interval=1.0, jitter=0.0)


class TestBackoff:
    @pytest.mark.promise("p-config-retry-defaults")
    def test_defaults(self) -> None:
        policy = RetryPolicy()
        assert policy == RetryPolicy(
            initial_interval=0.05, multiplier=2.0, max_interval=30.0, max_attempts=20, jitter=0.2
        )
        schedule = policy.schedule()
        assert len(schedule) == 19  # 20 attempts = 19 waits
        assert schedule[:4] == pytest.approx([0.05, 0.1, 0.2, 0.4])
        assert schedule[9] == pytest.approx(25.6)
        assert schedule[10:] == [30.0] * 9
        assert 300 < sum(schedule) < 360  # "about five and a half minutes", as documented

    def test_exponential_then_capped(self) -> None:
        delays = [NO_JITTER.next_delay(a, None, 0.0) for a in range(1, 7)]
        assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])

    def test_multiplier_one_is_constant(self) -> None:
        policy = RetryPolicy(initial_interval=0.5, multiplier=1.0, max_interval=0.5, jitter=0.0)
        assert policy.schedule() == [0.5] * 19

    def test_gives_up_after_max_attempts(self) -> None:
        policy = RetryPolicy(max_attempts=3, jitter=0.0)
        assert policy.next_delay(1, None, 0.0) is not None
        assert policy.next_delay(2, None, 0.0) is not None
        assert policy.next_delay(3, None, 0.0) is None
        assert policy.next_delay(4, None, 0.0) is None
        assert policy.exhausted(3)
        assert not policy.exhausted(2)

    def test_one_attempt_never_retries(self) -> None:
        policy = RetryPolicy(max_attempts=1)
        assert policy.next_delay(1, None, 0.5) is None
        assert policy.schedule() == []

    def test_unlimited_never_gives_up_and_never_overflows(self) -> None:
        policy = RetryPolicy(max_attempts=None, multiplier=10.0, jitter=0.0)
        assert policy.next_delay(10**6, None, 0.0) == 30.0
        assert not policy.exhausted(10**9)
        with pytest.raises(ValueError, match="unlimited"):
            policy.schedule()

    def test_attempt_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="attempt must be >= 1"):
            NO_JITTER.next_delay(0, None, 0.0)


class TestJitter:
    def test_jitter_only_shortens(self) -> None:
        policy = RetryPolicy(initial_interval=1.0, max_interval=8.0, jitter=0.5)
        assert policy.next_delay(1, None, 0.0) == 1.0
        assert policy.next_delay(1, None, 0.5) == 0.75
        assert policy.next_delay(4, None, 0.999) == pytest.approx(8.0 * (1 - 0.5 * 0.999))

    def test_deterministic_given_the_random_source(self) -> None:
        policy = RetryPolicy()
        first = [policy.next_delay(a, None, random.Random(42)) for a in range(1, 10)]
        second = [policy.next_delay(a, None, random.Random(42)) for a in range(1, 10)]
        assert first == second
        assert first != [policy.next_delay(a, None, 0.0) for a in range(1, 10)]

    def test_random_source_is_drawn_once_per_delay(self) -> None:
        rng = random.Random(7)
        expected_u = random.Random(7).random()
        delay = RetryPolicy(initial_interval=1.0, jitter=0.5).next_delay(1, None, rng)
        assert delay == pytest.approx(1.0 * (1 - 0.5 * expected_u))

    @pytest.mark.parametrize("u", [-0.1, 1.0, 2.0, math.nan])
    def test_draw_out_of_range_rejected(self, u: float) -> None:
        with pytest.raises(ValueError, match=r"rand must be in \[0, 1\)"):
            RetryPolicy(jitter=0.1).next_delay(1, None, u)

    def test_no_jitter_ignores_the_draw(self) -> None:
        assert NO_JITTER.next_delay(1, None, 0.9) == pytest.approx(0.1)


class TestRetryAfter:
    def test_longer_retry_after_wins(self) -> None:
        assert NO_JITTER.next_delay(1, 0.5, 0.0) == 0.5

    def test_shorter_retry_after_is_ignored(self) -> None:
        assert NO_JITTER.next_delay(3, 0.1, 0.0) == pytest.approx(0.4)

    def test_retry_after_capped_at_max_interval(self) -> None:
        assert NO_JITTER.next_delay(1, 3600.0, 0.0) == 1.0

    def test_retry_after_is_not_jittered(self) -> None:
        policy = RetryPolicy(initial_interval=0.1, max_interval=10.0, jitter=0.5)
        assert policy.next_delay(1, 2.0, 0.9) == 2.0

    def test_retry_after_grants_no_extra_attempts(self) -> None:
        assert RetryPolicy(max_attempts=2).next_delay(2, 1.0, 0.0) is None

    @pytest.mark.parametrize("bad", [-5.0, math.nan, math.inf, -math.inf])
    def test_nonsense_retry_after_is_ignored(self, bad: float) -> None:
        assert NO_JITTER.next_delay(2, bad, 0.0) == pytest.approx(0.2)


class TestValidation:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"initial_interval": 0.0}, "initial_interval must be > 0"),
            ({"initial_interval": -1.0}, "initial_interval must be > 0"),
            ({"initial_interval": math.nan}, "initial_interval must be finite"),
            ({"max_interval": math.inf}, "max_interval must be finite"),
            ({"initial_interval": 2.0, "max_interval": 1.0}, "max_interval .* must be >= "),
            ({"multiplier": 0.5}, "multiplier must be >= 1"),
            ({"jitter": 1.5}, r"jitter must be in \[0, 1\]"),
            ({"jitter": -0.1}, r"jitter must be in \[0, 1\]"),
            ({"max_attempts": 0}, "max_attempts must be a positive integer"),
        ],
    )
    def test_invalid_fields_name_the_field(self, kwargs: dict[str, Any], match: str) -> None:
        with pytest.raises(ConfigError, match=match):
            RetryPolicy(**kwargs)

    def test_is_frozen(self) -> None:
        policy = RetryPolicy()
        with pytest.raises(AttributeError):
            policy.jitter = 0.5  # type: ignore[misc]


class TestFromOptions:
    def test_all_options(self) -> None:
        policy = RetryPolicy.from_options(
            {
                "retry.initial.interval.ms": "250",
                "retry.max.interval.ms": 60_000,
                "retry.max.attempts": "5",
                "retry.backoff.multiplier": "1.5",
                "retry.jitter": 0.0,
            }
        )
        assert policy == RetryPolicy(
            initial_interval=0.25, max_interval=60.0, max_attempts=5, multiplier=1.5, jitter=0.0
        )

    def test_no_options_gives_base(self) -> None:
        assert RetryPolicy.from_options({}) == RetryPolicy()
        base = RetryPolicy(max_attempts=3)
        assert RetryPolicy.from_options({}, base=base) == base
        assert RetryPolicy.from_options({"retry.jitter": "0.1"}, base=base) == RetryPolicy(
            max_attempts=3, jitter=0.1
        )

    @pytest.mark.parametrize("raw", ["unlimited", "UNLIMITED", "none", "-1", -1])
    def test_unlimited_attempts(self, raw: str | int) -> None:
        assert RetryPolicy.from_options({"retry.max.attempts": raw}).max_attempts is None

    def test_float_attempts_that_are_integers_are_accepted(self) -> None:
        assert RetryPolicy.from_options({"retry.max.attempts": 4.0}).max_attempts == 4

    def test_other_options_are_ignored(self) -> None:
        options = {
            "auto.offset.reset": "earliest",
            "retry.backoff.ms": "100",  # the Kafka client's own, not ours
            "retry.backoff.max.ms": "1000",
            "retry.max.attempts": "2",
        }
        assert RetryPolicy.from_options(options).max_attempts == 2

    def test_unknown_retry_option_is_a_typo(self) -> None:
        with pytest.raises(ConfigError, match=r"unknown retry option 'retry\.max\.atempts'"):
            RetryPolicy.from_options({"retry.max.atempts": "3"})

    @pytest.mark.parametrize(
        ("key", "raw", "match"),
        [
            ("retry.initial.interval.ms", "fast", "retry.initial.interval.ms must be a number"),
            ("retry.initial.interval.ms", "0", "retry.initial.interval.ms must be > 0, got 0"),
            ("retry.initial.interval.ms", "nan", "retry.initial.interval.ms must be finite"),
            ("retry.initial.interval.ms", True, "retry.initial.interval.ms must be a number"),
            ("retry.max.interval.ms", "inf", "retry.max.interval.ms must be finite"),
            ("retry.backoff.multiplier", "0.9", "retry.backoff.multiplier must be >= 1"),
            ("retry.jitter", "2", r"retry.jitter must be in \[0, 1\]"),
            ("retry.max.attempts", "0", "retry.max.attempts must be a positive integer"),
            ("retry.max.attempts", "2.5", "retry.max.attempts must be a positive integer"),
            ("retry.max.attempts", 2.5, "retry.max.attempts must be a positive integer"),
            ("retry.max.attempts", "lots", "retry.max.attempts must be a positive integer"),
            ("retry.max.attempts", False, "retry.max.attempts must be a positive integer"),
        ],
    )
    def test_invalid_values_name_the_key(self, key: str, raw: str | float, match: str) -> None:
        with pytest.raises(ConfigError, match=match):
            RetryPolicy.from_options({key: raw})

    def test_cross_field_error_names_both_keys_in_ms(self) -> None:
        with pytest.raises(
            ConfigError,
            match=r"retry\.max\.interval\.ms \(100\) must be >= retry\.initial\.interval\.ms "
            r"\(500\)",
        ):
            RetryPolicy.from_options(
                {"retry.initial.interval.ms": "500", "retry.max.interval.ms": "100"}
            )

    def test_option_keys_are_published(self) -> None:
        assert set(OPTION_KEYS) == {
            "retry.initial.interval.ms",
            "retry.max.interval.ms",
            "retry.max.attempts",
            "retry.backoff.multiplier",
            "retry.jitter",
        }


# -- properties -----------------------------------------------------------------------------

policies = st.builds(
    lambda initial, span, multiplier, attempts, jitter: RetryPolicy(
        initial_interval=initial,
        max_interval=initial * span,
        multiplier=multiplier,
        max_attempts=attempts,
        jitter=jitter,
    ),
    initial=st.floats(min_value=0.001, max_value=10.0),
    span=st.floats(min_value=1.0, max_value=10_000.0),
    multiplier=st.floats(min_value=1.0, max_value=20.0),
    attempts=st.one_of(st.none(), st.integers(min_value=1, max_value=200)),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)


@PROPERTY
@given(policy=policies)
def test_without_jitter_delays_are_monotone_and_bounded(policy: RetryPolicy) -> None:
    limit = policy.max_attempts if policy.max_attempts is not None else 300
    previous = 0.0
    for attempt in range(1, limit):
        delay = policy.next_delay(attempt, None, 0.0)
        assert delay is not None
        assert delay == policy.backoff(attempt)
        assert policy.initial_interval <= delay <= policy.max_interval
        assert delay >= previous
        previous = delay


@PROPERTY
@given(policy=policies, u=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
@pytest.mark.promise("p-fault-handler-down")
def test_jittered_delays_stay_within_the_band(policy: RetryPolicy, u: float) -> None:
    for attempt in (1, 2, 5, 50):
        delay = policy.next_delay(attempt, None, u)
        if delay is None:
            assert policy.exhausted(attempt)
            continue
        base = policy.backoff(attempt)
        assert base * (1 - policy.jitter) - 1e-12 <= delay <= base <= policy.max_interval


@PROPERTY
@given(policy=policies, attempt=st.integers(min_value=1, max_value=400))
def test_gives_up_exactly_after_max_attempts(policy: RetryPolicy, attempt: int) -> None:
    delay = policy.next_delay(attempt, None, 0.0)
    if policy.max_attempts is not None and attempt >= policy.max_attempts:
        assert delay is None
    else:
        assert delay is not None


@PROPERTY
@given(
    policy=policies,
    retry_after=st.floats(min_value=0.0, max_value=1e6),
    u=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
@pytest.mark.promise("p-proto-retry-after")
def test_retry_after_is_a_floor_up_to_the_cap(
    policy: RetryPolicy, retry_after: float, u: float
) -> None:
    delay = policy.next_delay(1, retry_after, u)
    if delay is None:
        assert policy.max_attempts == 1
        return
    assert delay <= policy.max_interval
    assert delay >= min(retry_after, policy.max_interval)
    backoff_only = policy.next_delay(1, None, u)
    assert backoff_only is not None
    assert delay >= backoff_only


class TestUntilOk:
    async def test_retries_until_the_call_succeeds(self) -> None:
        failures: list[str] = []
        answers = iter([StoreError("a"), StoreError("b"), "ok"])

        async def call() -> str:
            answer = next(answers)
            if isinstance(answer, Exception):
                raise answer
            return answer

        result = await until_ok(
            call, on_error=lambda e: failures.append(str(e)), errors=(StoreError,), first_delay_s=0
        )
        assert (result, failures) == ("ok", ["a", "b"])

    async def test_gives_up_after_a_failure_once_the_work_is_not_wanted(self) -> None:
        calls = 0

        async def call() -> None:
            nonlocal calls
            calls += 1
            raise StoreError("down")

        with pytest.raises(RetryAbandoned):
            await until_ok(
                call, on_error=lambda e: None, errors=(StoreError,), give_up=lambda: calls >= 2
            )
        assert calls == 2

    async def test_a_stop_cuts_the_wait_short_and_ends_the_retries(self) -> None:
        stop = asyncio.Event()

        async def call() -> None:
            raise StoreError("down")

        failed = asyncio.Event()
        retrying = asyncio.create_task(
            until_ok(
                call,
                on_error=lambda e: failed.set(),
                errors=(StoreError,),
                first_delay_s=60,
                stop=stop,
            )
        )
        await asyncio.wait_for(failed.wait(), 1)  # the first failure: the 60 s wait is next
        stop.set()
        with pytest.raises(RetryAbandoned):
            await asyncio.wait_for(retrying, 1)
