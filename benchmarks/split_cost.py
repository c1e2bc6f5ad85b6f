"""What a split decision costs per request (target <= 2 us), in one run.

    python benchmarks/split_cost.py [--out benchmarks/results/split_cost.md]

- Splitter.choose() without a key (weighted random), with a sticky key (blake2b bucket), with an
  override; and the gateway's whole decision (header scan + choose) on a realistic header list.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import emit, machine_line  # noqa: E402
from gateway.proxy.app import ProxyApp  # noqa: E402
from gateway.proxy.runtime import Route, Variant  # noqa: E402
from routing import Splitter  # noqa: E402


def per_call(fn, n: int = 200_000) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    s = Splitter("iris", [("control", 90), ("candidate", 10)])
    variants = [Variant("control", None, b"control"), Variant("candidate", None, b"candidate")]
    route = Route("iris", variants, splitter=s, sticky_header=b"x-user-id")
    scope = {"headers": [(b"host", b"gw:8080"), (b"user-agent", b"python-httpx/0.28"),
                         (b"accept", b"*/*"), (b"content-type", b"application/json"),
                         (b"content-length", b"261"), (b"x-user-id", b"user-12345")]}
    rows = [("Splitter.choose(), weighted random", per_call(lambda: s.choose())),
            ("Splitter.choose(key), sticky", per_call(lambda: s.choose(b"user-12345"))),
            ("Splitter.choose(override=...)", per_call(lambda: s.choose(override="candidate"))),
            ("gateway decision: header scan + sticky choose",
             per_call(lambda: ProxyApp._choose(route, scope)))]
    lines = [f"Machine: {machine_line()}.", "", "| decision | us per request | target |",
             "|---|---|---|"] + [f"| {name} | {us:.2f} | <= 2 us |" for name, us in rows]
    emit("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
