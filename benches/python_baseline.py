#!/usr/bin/env python3
"""The common Python approach, as a data person writes it: AsyncOpenAI + asyncio.Semaphore,
every row sent at once under the semaphore, one JSONL line per result (id, content, usage).

    python_baseline.py ROWS.jsonl OUT.jsonl --base-url URL -c N [--model M] [--max-retries R]

Prints one JSON line to stdout: {"rows", "ok", "failed", "wall_s", "rows_per_s"}.
"""
import argparse
import asyncio
import json
import sys
import time

from openai import AsyncOpenAI


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("rows")
    ap.add_argument("out")
    ap.add_argument("--base-url", required=True)
    ap.add_argument("-c", "--concurrency", type=int, default=64)
    ap.add_argument("--model", default="qwen-plus")
    ap.add_argument("--max-retries", type=int, default=2)
    args = ap.parse_args()

    with open(args.rows, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]

    client = AsyncOpenAI(base_url=args.base_url, api_key="x", max_retries=args.max_retries)
    sem = asyncio.Semaphore(args.concurrency)
    ok = failed = 0
    started = time.perf_counter()

    with open(args.out, "w", encoding="utf-8") as out:

        async def one(row):
            nonlocal ok, failed
            async with sem:
                try:
                    resp = await client.chat.completions.create(
                        model=args.model,
                        messages=[{"role": "user", "content": row["prompt"]}],
                    )
                    rec = {"id": row["id"], "content": resp.choices[0].message.content,
                           "usage": resp.usage.model_dump() if resp.usage else None}
                    ok += 1
                except Exception as e:  # noqa: BLE001 - record the error and go on
                    rec = {"id": row["id"], "error": repr(e)}
                    failed += 1
                out.write(json.dumps(rec) + "\n")

        await asyncio.gather(*(one(r) for r in rows))

    wall = time.perf_counter() - started
    await client.close()
    print(json.dumps({"rows": len(rows), "ok": ok, "failed": failed, "wall_s": round(wall, 3),
                      "rows_per_s": round(len(rows) / wall, 1)}))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
