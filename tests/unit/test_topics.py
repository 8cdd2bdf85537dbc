"""Metadata v10..v13 on the wire, topic ID rendering, and what a response means."""

from __future__ import annotations

import base64
import uuid
from io import BytesIO
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.client import ConnectionGroup
from aiokafka.protocol.api import ResponseHeader_v1
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.errors import KafkaAuthError, KafkaError
from adapter.kafka.topics import (
    ZERO_TOPIC_ID,
    MetadataRequest,
    MetadataRequest_v10,
    MetadataRequest_v11,
    MetadataRequest_v12,
    MetadataRequest_v13,
    MetadataResponse_v10,
    MetadataResponse_v13,
    TopicInfo,
    Uuid,
    _send_to_any_broker,
    render_topic_id,
    topics_from_response,
)

PROPERTY = settings(max_examples=100, deadline=None, database=None)

ORDERS_ID = bytes.fromhex("18809abcb18c47ca9c8a50b5fe8f16da")

# Kafka 4.4's answers (response header included) to Metadata v13 and v10 requests for
# ["orders", "missing"]: "orders" has 3 partitions, "missing" does not exist.
CAPTURED_V13 = bytes.fromhex(
    "00000007000000000002000000010a3132372e302e302e310000c8db000017793556492d4c586652634734"
    "306b4b304b497a446c5100000001030000076f726465727318809abcb18c47ca9c8a50b5fe8f16da000400"
    "000000000000000001000000000200000001020000000101000000000000010000000100000000020000"
    "000102000000010100000000000002000000010000000002000000010200000001010080000000000003"
    "086d697373696e670000000000000000000000000000000000018000000000000000"
)
CAPTURED_V10 = bytes.fromhex(
    "00000007000000000002000000010a3132372e302e302e310000c8db000017793556492d4c586652634734"
    "306b4b304b497a446c5100000001030000076f726465727318809abcb18c47ca9c8a50b5fe8f16da000400"
    "000000000000000001000000000200000001020000000101000000000000010000000100000000020000"
    "000102000000010100000000000002000000010000000002000000010200000001010080000000000003"
    "086d697373696e6700000000000000000000000000000000000180000000008000000000"
)


def decode_captured(request_struct: type, data: bytes) -> object:
    buffer = BytesIO(data)
    # Flexible versions answer with response header v1 (correlation id, tagged fields).
    assert request_struct.FLEXIBLE_VERSION  # type: ignore[attr-defined]
    header = ResponseHeader_v1.decode(buffer)
    assert header.correlation_id == 7
    response = request_struct.RESPONSE_TYPE.decode(buffer)  # type: ignore[attr-defined]
    assert buffer.read() == b"", "the schema left bytes of the response unread"
    return response


def topic_entry(
    name: str, *, error_code: int = 0, topic_id: bytes = ORDERS_ID, partitions: int = 1
) -> tuple[object, ...]:
    parts = [(0, i, 1, 0, [1], [1], [], {}) for i in range(partitions)]
    return (error_code, name, topic_id, False, parts, -(2**31), {})


def response_v13(*topics: tuple[object, ...], error_code: int = 0) -> MetadataResponse_v13:
    brokers = [(1, "127.0.0.1", 9092, None, {})]
    return MetadataResponse_v13(0, brokers, "cluster", 1, list(topics), error_code, {})


class TestTopicIdRendering:
    def test_renders_like_kafkas_uuid_to_string(self) -> None:
        # Kafka's Uuid.toString: URL-safe base64, no padding (the broker wrote this ID
        # as "GICavLGMR8qcilC1_o8W2g" for the captured topic).
        assert render_topic_id(ORDERS_ID) == "GICavLGMR8qcilC1_o8W2g"

    def test_zero_uuid(self) -> None:
        assert render_topic_id(ZERO_TOPIC_ID) == "AAAAAAAAAAAAAAAAAAAAAA"

    def test_url_safe_alphabet(self) -> None:
        assert render_topic_id(b"\xfb\xff" + bytes(14)) == "-_8AAAAAAAAAAAAAAAAAAA"

    def test_wrong_length_is_refused(self) -> None:
        with pytest.raises(ValueError, match="16 bytes, not 15"):
            render_topic_id(bytes(15))

    @PROPERTY
    @given(st.binary(min_size=16, max_size=16))
    def test_22_characters_that_decode_back(self, raw: bytes) -> None:
        rendered = render_topic_id(raw)
        assert len(rendered) == 22
        assert "=" not in rendered
        assert base64.urlsafe_b64decode(rendered + "==") == raw


class TestUuidType:
    def test_round_trip(self) -> None:
        raw = uuid.uuid4().bytes
        assert Uuid.decode(BytesIO(Uuid.encode(raw) + b"rest")) == raw

    def test_short_buffer_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="underrun"):
            Uuid.decode(BytesIO(bytes(15)))

    def test_wrong_length_is_refused(self) -> None:
        with pytest.raises(ValueError, match="16 bytes, not 17"):
            Uuid.encode(bytes(17))


class TestRequest:
    def test_v13_bytes_follow_kafkas_schema(self) -> None:
        struct = MetadataRequest(["orders"]).prepare({3: (0, 13)})
        assert isinstance(struct, MetadataRequest_v13)
        expected = (
            b"\x02"  # compact array of 1 topic
            + ZERO_TOPIC_ID  # asked by name: no ID
            + b"\x07orders"  # compact string
            + b"\x00"  # topic's tagged fields
            + b"\x00"  # AllowAutoTopicCreation = false
            + b"\x00"  # IncludeTopicAuthorizedOperations = false
            + b"\x00"  # request's tagged fields
        )
        assert struct.encode() == expected

    def test_v10_also_carries_include_cluster_authorized_operations(self) -> None:
        struct = MetadataRequest(["orders"]).prepare({3: (0, 10)})
        assert isinstance(struct, MetadataRequest_v10)
        assert struct.encode() == b"\x02" + ZERO_TOPIC_ID + b"\x07orders\x00" + bytes(4)

    @pytest.mark.parametrize(
        ("broker_max", "expected"),
        [
            (13, MetadataRequest_v13),
            (14, MetadataRequest_v13),
            (12, MetadataRequest_v12),
            (11, MetadataRequest_v11),
            (10, MetadataRequest_v10),
        ],
    )
    def test_highest_version_the_broker_accepts(self, broker_max: int, expected: type) -> None:
        struct = MetadataRequest(["t"]).prepare({3: (0, broker_max)})
        assert type(struct) is expected
        assert struct.FLEXIBLE_VERSION

    def test_a_broker_without_topic_ids_is_refused(self) -> None:
        with pytest.raises(NotImplementedError):
            MetadataRequest(["t"]).prepare({3: (0, 9)})

    @PROPERTY
    @given(
        st.lists(st.text(min_size=1, max_size=40), max_size=5),
        st.sampled_from([10, 11, 12, 13]),
    )
    def test_round_trip_never_allows_auto_creation(self, names: list[str], version: int) -> None:
        struct = MetadataRequest(names).prepare({3: (0, version)})
        decoded = type(struct).decode(struct.encode())
        assert [t[1] for t in decoded.topics] == names
        assert all(t[0] == ZERO_TOPIC_ID for t in decoded.topics)
        assert decoded.allow_auto_topic_creation is False
        assert decoded == struct

    def test_flexible_header_carries_tagged_fields(self) -> None:
        struct = MetadataRequest(["orders"]).prepare({3: (0, 13)})
        header = struct.build_request_header(correlation_id=9, client_id="c").encode()
        # api key 3, version 13, correlation 9, client id (non-compact), empty tagged fields
        assert header == b"\x00\x03\x00\x0d\x00\x00\x00\x09\x00\x01c\x00"


class TestCapturedResponses:
    @pytest.mark.parametrize(
        ("request_struct", "captured"),
        [(MetadataRequest_v13, CAPTURED_V13), (MetadataRequest_v10, CAPTURED_V10)],
    )
    def test_decodes_a_real_brokers_answer(self, request_struct: type, captured: bytes) -> None:
        response = decode_captured(request_struct, captured)
        assert topics_from_response(response, ["orders", "missing"]) == {
            "orders": TopicInfo(name="orders", topic_id="GICavLGMR8qcilC1_o8W2g", partitions=3),
            "missing": None,
        }

    def test_v10_carries_cluster_authorized_operations(self) -> None:
        response = decode_captured(MetadataRequest_v10, CAPTURED_V10)
        assert isinstance(response, MetadataResponse_v10)
        assert response.cluster_authorized_operations == -(2**31)
        assert response.cluster_id == "y5VI-LXfRcG40kK0KIzDlQ"

    def test_response_round_trip(self) -> None:
        response = response_v13(
            topic_entry("a", partitions=2), topic_entry("b", error_code=3, topic_id=ZERO_TOPIC_ID)
        )
        assert MetadataResponse_v13.decode(response.encode()) == response

    def test_truncated_response_is_an_error(self) -> None:
        with pytest.raises(ValueError, match=r"underrun|unpack requires"):
            decode_captured(MetadataRequest_v13, CAPTURED_V13[:-40])


class TestMeaning:
    def test_partition_count_and_id(self) -> None:
        found = topics_from_response(response_v13(topic_entry("a", partitions=5)), ["a"])
        assert found == {"a": TopicInfo("a", render_topic_id(ORDERS_ID), 5)}

    def test_unknown_topic_is_none(self) -> None:
        response = response_v13(topic_entry("gone", error_code=3, topic_id=ZERO_TOPIC_ID))
        assert topics_from_response(response, ["gone"]) == {"gone": None}

    def test_not_authorised_is_an_auth_error_naming_the_topic(self) -> None:
        response = response_v13(topic_entry("secret", error_code=29, topic_id=ZERO_TOPIC_ID))
        with pytest.raises(KafkaAuthError, match=r"'secret'.*TOPIC_AUTHORIZATION_FAILED"):
            topics_from_response(response, ["secret"])

    def test_other_topic_errors_name_the_topic(self) -> None:
        response = response_v13(
            topic_entry("ok"), topic_entry("bad name!", error_code=17, topic_id=ZERO_TOPIC_ID)
        )
        with pytest.raises(KafkaError, match=r"'bad name!'.*INVALID_TOPIC") as caught:
            topics_from_response(response, ["ok", "bad name!"])
        assert not isinstance(caught.value, KafkaAuthError)

    def test_top_level_error_names_the_topics(self) -> None:
        response = response_v13(topic_entry("a"), error_code=31)
        with pytest.raises(KafkaAuthError, match=r"'a'.*CLUSTER_AUTHORIZATION_FAILED"):
            topics_from_response(response, ["a"])

    def test_topic_left_out_of_the_answer(self) -> None:
        with pytest.raises(KafkaError, match=r"'b'.*left it out"):
            topics_from_response(response_v13(topic_entry("a")), ["a", "b"])

    def test_existing_topic_without_id(self) -> None:
        response = response_v13(topic_entry("a", topic_id=ZERO_TOPIC_ID))
        with pytest.raises(KafkaError, match=r"'a'.*no topic ID"):
            topics_from_response(response, ["a"])

    def test_partition_errors_do_not_hide_the_topic(self) -> None:
        entry = list(topic_entry("a", partitions=2))
        entry[4] = [(5, 0, -1, 0, [1], [], [], {}), (0, 1, 1, 0, [1], [1], [], {})]
        found = topics_from_response(response_v13(tuple(entry)), ["a"])
        assert found["a"] == TopicInfo("a", render_topic_id(ORDERS_ID), 2)


class TestWhichBrokerIsAsked:
    """A look-up goes to a broker the client is already connected to, if any: a connection
    opened only for it costs a handshake and closes again when idle."""

    class _Conn:
        def __init__(self, connected: bool) -> None:
            self._connected = connected

        def connected(self) -> bool:
            return self._connected

    class _Client:
        def __init__(self, brokers: list[int], connected: set[int]) -> None:
            self.cluster = self
            self._brokers = brokers
            self._conns = {
                (node, group): TestWhichBrokerIsAsked._Conn(node in connected)
                for node in brokers
                for group in (ConnectionGroup.DEFAULT, ConnectionGroup.COORDINATION)
            }
            self.asked: list[int] = []

        def brokers(self) -> list[Any]:
            return [SimpleNamespace(nodeId=node) for node in self._brokers]

        async def send(self, node_id: int, request: Any) -> Any:
            self.asked.append(node_id)
            return "answer"

    @pytest.mark.parametrize("connected", [1, 2, 3])
    async def test_a_connected_broker_is_asked_first(self, connected: int) -> None:
        for _ in range(20):  # the order among the others is random
            client = self._Client([1, 2, 3], {connected})
            assert await _send_to_any_broker(client, MetadataRequest(["t"]), "c") == "answer"  # type: ignore[arg-type]
            assert client.asked == [connected]
