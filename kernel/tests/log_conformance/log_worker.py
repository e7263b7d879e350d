"""A child process for the crash tests: publishes to or consumes from an embedded log until done or killed.

Every line it prints is a promise already kept: `published N` once messages 0..N-1 are durable,
`committed {"partition": next_offset, ...}` once that commit is durable."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from gatherly.kernel.log import EmbeddedLog, OutgoingMessage, TopicPartition
from gatherly.kernel.log.base import TopicConfig

KEYS_PER_PUBLISHER = 7


async def publish(
    log: EmbeddedLog, topic: str, prefix: str, count: int | None, batch: int, pause_at: int | None = None
) -> None:
    await log.ensure_topics([TopicConfig(topic)])
    sent = 0
    while count is None or sent < count:
        if sent == pause_at:
            print(f"paused {sent}", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
        size = batch if count is None else min(batch, count - sent)
        await log.publish(
            [
                OutgoingMessage(topic, f"{prefix}-k{n % KEYS_PER_PUBLISHER}", f"{prefix}:{n}".encode())
                for n in range(sent, sent + size)
            ]
        )
        sent += size
        print(f"published {sent}", flush=True)


async def consume(log: EmbeddedLog, topic: str, group: str, batch: int) -> None:
    consumer = log.consumer(group, [topic])
    while True:
        records = await consumer.poll(max_records=batch, timeout=0.5)
        if not records:
            continue
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
        await consumer.commit(offsets)
        print("committed " + json.dumps({str(tp.partition): n for tp, n in offsets.items()}), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["publish", "consume"])
    parser.add_argument("path", type=Path)
    parser.add_argument("topic")
    parser.add_argument("--prefix", default="p")
    parser.add_argument("--count", type=int, default=None, help="stop after this many (default: until killed)")
    parser.add_argument("--group", default="g")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--session-timeout", type=float, default=1.0)
    parser.add_argument("--wait-for-go", action="store_true", help="say `ready`, then start at a line on stdin")
    parser.add_argument("--pause-at", type=int, default=None, help="publishing: say `paused N`, go on at a line")
    args = parser.parse_args()
    async with EmbeddedLog(args.path, session_timeout=args.session_timeout) as log:
        if args.wait_for_go:
            print("ready", flush=True)
            # A start line for several children, so their work really overlaps despite uneven start-up times.
            await asyncio.to_thread(sys.stdin.readline)
        if args.mode == "publish":
            await publish(log, args.topic, args.prefix, args.count, args.batch, args.pause_at)
        else:
            await consume(log, args.topic, args.group, args.batch)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
