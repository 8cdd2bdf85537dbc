"""IDs in Restate's format (adapter/ids.py): round trips, ordering, rejection of malformed IDs.

The fixed vectors come from Restate's own tests and issue reports (``dp_11nGQpCRmau6ypL82KH2TnP``
in ``crates/types/src/identifiers.rs``), so a codec that only agrees with itself fails here.
"""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from adapter import ids
from adapter.errors import ValidationError
from tests._earlier_ids import earlier_resource_id

RESTATE_FORM = re.compile(r"^(sub|dp)_1[0-9a-zA-Z]{22}$")
INV_FORM = re.compile(r"^inv_1[0-9a-zA-Z]{33}$")
MS = st.integers(min_value=0, max_value=(1 << 48) - 1)
U32 = st.integers(min_value=0, max_value=(1 << 32) - 1)
U63 = st.integers(min_value=0, max_value=(1 << 63) - 1)
TEXT = st.text(min_size=1, max_size=60)


# -- Restate's vectors ------------------------------------------------------------------------


def test_restates_own_deployment_id_decodes_to_its_creation_time_and_encodes_back() -> None:
    parsed = ids.parse_resource_id("dp_11nGQpCRmau6ypL82KH2TnP", "dp")
    # 2025-01-07T18:05:49.519Z: a plausible creation time only if the bytes are reversed as
    # Restate does (without the reversal the timestamp lands in the year 3552).
    assert parsed.created_ms == 1736273149519
    assert not parsed.legacy
    assert ids._encode_ulid("dp", parsed.ulid) == "dp_11nGQpCRmau6ypL82KH2TnP"


def test_restates_subscription_id_from_the_cli_report_round_trips() -> None:
    parsed = ids.parse_resource_id("sub_14qABEEcoWcStSkhfGdFRDP", "sub")
    assert ids._encode_ulid("sub", parsed.ulid) == "sub_14qABEEcoWcStSkhfGdFRDP"
    assert 1_700_000_000_000 < parsed.created_ms < 1_900_000_000_000


def test_restates_length_error_vector_is_rejected() -> None:
    with pytest.raises(ValidationError, match="dp_11nGQpCRmau6ypL82KH2TnP123456"):
        ids.parse_resource_id("dp_11nGQpCRmau6ypL82KH2TnP123456", "dp")


# -- subscriptions and deployments --------------------------------------------------------------


@given(MS, st.sampled_from(["sub", "dp"]))
def test_new_resource_ids_have_restates_shape_and_carry_their_timestamp(ms: int, kind: str) -> None:
    value = ids.subscription_id(ms) if kind == "sub" else ids.deployment_id(ms)
    assert RESTATE_FORM.match(value), value
    parsed = ids.parse_resource_id(value, kind)
    assert parsed.created_ms == ms
    assert ids.created_ms(value) == ms
    assert ids._encode_ulid(kind, parsed.ulid) == value


@given(st.lists(MS, min_size=2, max_size=30))
def test_creation_order_sorts_ids_by_creation_time(times: list[int]) -> None:
    made = [(ms, ids.subscription_id(ms)) for ms in times]
    ordered = sorted((value for _, value in made), key=ids.creation_order)
    assert [ids.created_ms(v) for v in ordered] == sorted(times)


def test_restates_strings_do_not_sort_by_creation_time() -> None:
    # Why listings sort by creation_order: Restate's byte reversal puts random bits first.
    made = [ids.subscription_id(1_767_225_600_000 + i) for i in range(200)]
    assert sorted(made) != made
    assert sorted(made, key=ids.creation_order) == made


def test_earlier_form_ids_are_accepted_with_their_timestamp() -> None:
    ms, rand = 1_767_225_600_123, 0x1234_5678_9ABC_DEF0_1234
    earlier = earlier_resource_id("sub_", ms, rand)
    parsed = ids.parse_resource_id(earlier, "sub")
    assert parsed.legacy
    assert (parsed.created_ms, parsed.ulid) == (ms, ms << 80 | rand)
    assert ids.stored_forms(earlier, "sub") == (earlier, ids.restate_form(earlier))
    assert ids.stored_forms(ids.restate_form(earlier), "sub") == (
        ids.restate_form(earlier),
        earlier,
    )
    assert ids.creation_order(earlier) < ids.creation_order(ids.subscription_id(ms + 1))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("dp_14qABEEcoWcStSkhfGdFRDP", "not a subscription ID"),  # wrong prefix
        ("sub14qABEEcoWcStSkhfGdFRDP", "not a subscription ID"),  # no separator
        ("sub_24qABEEcoWcStSkhfGdFRDP", "unknown codec version '2'"),
        ("sub_u4qABEEcoWcStSkhfGdFRDP", "unknown codec version 'u'"),
        ("sub_14qABEEcoWcStSkhfGdFRD", "expected sub_1 followed by 22"),  # short
        ("sub_14qABEEcoWcStSkhfGdFRDPP", "expected sub_1 followed by 22"),  # long
        ("sub_14qABEEcoWcStSkhfGdF-DP", "expected sub_1"),  # bad character
        ("sub_1zzzzzzzzzzzzzzzzzzzzzz", "expected sub_1"),  # > 128 bits
        ("sub_", "expected sub_1"),
        ("", "not a subscription ID"),
    ],
)
def test_malformed_subscription_ids_are_refused_naming_the_id(value: str, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ids.parse_resource_id(value, "sub")
    assert reason in str(caught.value)
    assert repr(value) in str(caught.value)


@given(st.text(max_size=40))
def test_arbitrary_text_is_either_a_valid_id_or_a_validation_error(value: str) -> None:
    try:
        parsed = ids.parse_resource_id(value, "sub")
    except ValidationError as exc:
        message = str(exc)
    else:
        assert value.startswith("sub_")
        assert parsed.prefix == "sub"
        return
    assert repr(value) in message


@given(MS, st.integers(min_value=0, max_value=22), st.sampled_from(string.punctuation + " é"))
def test_a_foreign_character_anywhere_is_refused(ms: int, at: int, char: str) -> None:
    value = ids.subscription_id(ms)
    broken = value[: 5 + at] + char + value[6 + at :]
    with pytest.raises(ValidationError):
        ids.parse_resource_id(broken, "sub")


# -- invocations -------------------------------------------------------------------------------


@given(TEXT, TEXT, U32, U63)
def test_invocation_ids_round_trip_to_the_records_coordinates(
    sub: str, topic: str, partition: int, offset: int
) -> None:
    value = ids.invocation_id(sub, topic, partition, offset)
    assert INV_FORM.match(value), value
    assert value == ids.invocation_id(sub, topic, partition, offset)  # deterministic
    assert ids.is_invocation_id(value)
    coords = ids.parse_invocation_id(value)
    assert coords == ids.InvocationCoordinates(ids.topic_ref(sub, topic), partition, offset)


@given(TEXT, TEXT, U32, U63, U32, U63)
def test_different_records_get_different_ids(
    sub: str, topic: str, p1: int, o1: int, p2: int, o2: int
) -> None:
    assume((p1, o1) != (p2, o2))
    assert ids.invocation_id(sub, topic, p1, o1) != ids.invocation_id(sub, topic, p2, o2)


def test_topic_ref_separates_subscriptions_and_topics() -> None:
    refs = {
        ids.topic_ref("sub_a", "orders"),
        ids.topic_ref("sub_b", "orders"),
        ids.topic_ref("sub_a", "payments"),
        ids.topic_ref("sub_a\x00", "orders"),
    }
    assert len(refs) == 4
    assert all(0 <= r < 1 << 64 for r in refs)


@given(TEXT, U32, U63, st.integers(min_value=5, max_value=37), st.sampled_from(ids.BASE62))
def test_a_mistyped_invocation_id_is_refused_by_its_check_bits(
    sub: str, partition: int, offset: int, at: int, char: str
) -> None:
    value = ids.invocation_id(sub, "orders", partition, offset)
    typo = value[:at] + char + value[at + 1 :]
    assume(typo != value)
    with pytest.raises(ValidationError) as caught:
        ids.parse_invocation_id(typo)
    assert repr(typo) in str(caught.value)
    assert not ids.is_invocation_id(typo)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("sub_1jfsEiMEytec0QZRwV8dvOd9bPassQ1YT6", "not an invocation ID"),
        ("inv_2jfsEiMEytec0QZRwV8dvOd9bPassQ1YT6", "unknown codec version '2'"),
        ("inv_1jfsEiMEytec0QZRwV8dvOd9bPassQ1YT", "expected inv_1 followed by 33"),
        ("inv_1jfsEiMEytec0QZRwV8dvOd9bPassQ1YT66", "expected inv_1 followed by 33"),
        ("inv_1jfsEiMEytec0QZRwV8dvOd9bPassQ1Y_6", "expected inv_1"),
        ("inv_1zzzzzzzzzzzzQZRwV8dvOd9bPassQ1YT6", "expected inv_1"),  # key > 64 bits
        ("inv_1jfsEiMEytec0QZRwV8dvOd9bPassQ1YT7", "check digits do not match"),
        ("inv_0000000000aaaaaaaaaaaaaaaa", "earlier form"),
    ],
)
def test_malformed_invocation_ids_are_refused_naming_the_id(value: str, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ids.parse_invocation_id(value)
    assert reason in str(caught.value)
    assert repr(value) in str(caught.value)


def test_the_check_vector_still_resolves() -> None:
    # The valid twin of the vectors above: sub_x's orders, partition 3, offset 42.
    coords = ids.parse_invocation_id("inv_1jfsEiMEytec0QZRwV8dvOd9bPassQ1YT6")
    assert coords == ids.InvocationCoordinates(ids.topic_ref("sub_x", "orders"), 3, 42)


def test_earlier_form_invocation_ids_are_still_invocation_ids() -> None:
    assert ids.is_invocation_id("inv_0000000000aaaaaaaaaaaaaaaa")
    assert not ids.is_invocation_id("inv_0000000000aaaaaaaaaaaaaaaI")
    assert not ids.is_invocation_id("inv_")


@given(st.integers(min_value=0, max_value=(1 << 128) - 1))
def test_the_unrolled_u128_encoder_matches_the_plain_one(value: int) -> None:
    assert ids._b62_u128(value) == ids._b62(value, ids.U128_WIDTH)
    assert ids._un_b62(ids._b62_u128(value), 128) == value
