"""A child process for the Kafka fencing test: a group member that reads everything, says so, then commits when told.

Prints `holding {"partition": next_offset, ...}` once it has read every record, then waits for a line on stdin
(meanwhile it may be stopped with SIGSTOP) and prints `committed` or `refused: <why>`."""

from __future__ import annotations

import asyncio
import json
import sys

from gatherly.kernel.log import CommitFailed, KafkaLog, TopicPartition


async def main(bootstrap: str, topic: str, group: str, expected: int) -> None:
    async with KafkaLog(bootstrap, session_timeout=3.0) as log:
        consumer = log.consumer(group, [topic])
        offsets: dict[TopicPartition, int] = {}
        while sum(offsets.values()) < expected:
            for record in await consumer.poll(timeout=0.5):
                offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
        print("holding " + json.dumps({str(tp.partition): n for tp, n in offsets.items()}), flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        try:
            await consumer.commit(offsets)
        except CommitFailed as error:
            print(f"refused: {error}", flush=True)
        else:
            print("committed", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
