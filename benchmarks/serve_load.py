"""Load test of `chatsft serve` (run by hand): 32 concurrent clients x 10 requests, against the
same requests sent one at a time.

    python benchmarks/serve_load.py [--model models/sft] [--test data/clean/test.jsonl]

A real server process on 127.0.0.1; requests are greedy (temperature 0) chat completions of
fixed prompts from the test split (everything before each conversation's last assistant turn).
Reported per phase: requests/s, generated tokens/s (`usage.completion_tokens`), p50/p95
latency, errors; and how many concurrent replies differ from their one-at-a-time reply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chatsft.evaluation.run import split_prompt  # noqa: E402
from chatsft.io import read_jsonl, write_json  # noqa: E402
from tests.serve.server import Server  # noqa: E402


async def one(client: httpx.AsyncClient, body: dict) -> tuple[float, dict | None]:
    start = time.perf_counter()
    try:
        r = await client.post("/v1/chat/completions", json=body)
        out = r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        out = None
    return time.perf_counter() - start, out


async def phase(url: str, bodies: list[list[dict]]) -> tuple[dict, list]:
    """Each inner list is one client's requests, sent in order; the clients run concurrently."""
    results: list = [[None] * len(b) for b in bodies]
    async with httpx.AsyncClient(base_url=url, timeout=600,
                                 limits=httpx.Limits(max_connections=len(bodies))) as client:
        async def run(c: int) -> None:
            for k, body in enumerate(bodies[c]):
                results[c][k] = await one(client, body)

        start = time.perf_counter()
        await asyncio.gather(*(run(c) for c in range(len(bodies))))
        wall = time.perf_counter() - start
    flat = [r for rs in results for r in rs]
    ok = [out for _, out in flat if out is not None]
    lat = sorted(t for t, _ in flat)
    tokens = sum(o["usage"]["completion_tokens"] for o in ok)
    return {
        "requests": len(flat), "errors": len(flat) - len(ok), "seconds": round(wall, 2),
        "requests_per_s": round(len(ok) / wall, 2), "tokens_per_s": round(tokens / wall, 1),
        "latency_p50_s": round(statistics.median(lat), 3),
        "latency_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 3),
    }, [o["choices"][0]["message"]["content"] if o else None for o in (r[1] for r in flat)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/sft")
    ap.add_argument("--test", default="data/clean/test.jsonl")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=10, help="per client")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--output", default="benchmarks/results/serve_load.json")
    args = ap.parse_args()

    prompts = [split_prompt(r["messages"])[0] for r in read_jsonl(args.test)]
    n = args.clients * args.requests
    bodies = [{"model": "m", "messages": prompts[i % len(prompts)], "temperature": 0,
               "max_tokens": args.max_tokens} for i in range(n)]
    per_client = [bodies[c * args.requests:(c + 1) * args.requests] for c in range(args.clients)]
    server = Server(["serve", "--model-path", f"m={args.model}"])
    try:
        asyncio.run(phase(server.url, [bodies[:2]]))  # warm-up
        alone, alone_replies = asyncio.run(phase(server.url, [bodies]))
        crowd, crowd_replies = asyncio.run(phase(server.url, per_client))
    finally:
        server.stop()
    differ = sum(a != b for a, b in zip(alone_replies, crowd_replies, strict=True))
    report = {"model": args.model, "clients": args.clients, "requests_per_client":
              args.requests, "max_tokens": args.max_tokens, "one_at_a_time": alone,
              "concurrent": crowd, "speedup": round(crowd["requests_per_s"] /
                                                    alone["requests_per_s"], 2),
              "replies_differing": differ}
    print(json.dumps(report, indent=2))
    write_json(args.output, report)


if __name__ == "__main__":
    main()
