"""Does the broker's high watermark match what a partition holds?

Produces ``--messages`` records to a new one-partition topic from ``--producers``
processes, reads them all back from offset 0, and compares the broker's answer to
ListOffsets(latest) (``get_watermark_offsets``) with the offset after the last record
read. On Apache Kafka the two are equal. The local Tansu broker (memory storage) answers
with the base offset of the partition's last batch instead, so any tool that judges a
partition drained by ``position >= high watermark`` can think so with up to a batch
still unread. The topic is deleted afterwards.

    python scripts/broker_watermark_check.py --producers 4 --messages 5000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from smap_bench.config import get_settings


def _produce(bootstrap: str, topic: str, producer: int, count: int) -> None:
    client = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    for k in range(count):
        client.produce(topic, value=f"{producer}-{k}".encode(), partition=0)
        client.poll(0)
        if k % 50 == 0:
            time.sleep(0.001)  # several batches per producer
    client.flush(30)


def check(bootstrap: str, producers: int, messages: int) -> dict:
    topic = f"it-watermark-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result()
    try:
        workers = [
            mp.Process(target=_produce, args=(bootstrap, topic, i, messages))
            for i in range(producers)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": topic, "enable.auto.commit": False}
        )
        consumer.assign([TopicPartition(topic, 0, 0)])
        values, last_offset, started = set(), -1, time.monotonic()
        while len(values) < producers * messages and time.monotonic() - started < 30:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            values.add(message.value())
            last_offset = max(last_offset, message.offset())
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), cached=False)
        consumer.close()
    finally:
        admin.delete_topics([topic])
    return {
        "bootstrap": bootstrap,
        "produced": producers * messages,
        "read": len(values),
        "end_offset_read": last_offset + 1,
        "high_watermark_reported": high,
        "agree": high == last_offset + 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--messages", type=int, default=5000, help="per producer")
    args = parser.parse_args()
    print(json.dumps(check(get_settings().kafka_bootstrap, args.producers, args.messages)))


if __name__ == "__main__":
    main()
