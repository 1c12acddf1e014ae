"""The baseline of the validator: a bare aiokafka consume -> produce passthrough with batched acks.

`python -m baton_demo.perf.passthrough BOOTSTRAP SOURCE SINK GROUP` copies every record of SOURCE to SINK (same
key, same headers), sends a poll batch without awaiting each send, awaits the batch's acknowledgements, then
commits its offsets: at-least-once, as cheap as a Kafka consumer-producer gets. Producer settings as
Baton's bus (acks=all, idempotence, linger 0 ms); the same 500 records per poll as Baton's consumers.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def passthrough(bootstrap: str, source: str, sink: str, group: str) -> None:
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0)
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            acks = [
                await producer.send(sink, m.value, key=m.key, headers=list(m.headers or ()))
                for messages in batches.values()
                for m in messages
            ]
            if acks:
                await asyncio.gather(*acks)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(passthrough(*sys.argv[1:5]))
