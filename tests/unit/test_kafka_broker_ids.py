"""The test broker's KRaft cluster ids: what Kafka's storage tool accepts as an argument."""

from __future__ import annotations

import base64

from tests.integration.kafka_broker import _cluster_id


def test_cluster_ids_never_start_with_a_dash_and_decode_to_16_bytes() -> None:
    # One URL-safe base64 id in 64 starts with "-", which the storage tool reads as an
    # option: 4,000 draws meet such a draw with probability 1 - (63/64) ** 4000 > 0.9999.
    ids = [_cluster_id() for _ in range(4000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
