"""`driftgate report`: the experiments of a running gateway as tables for a terminal.

Reads GET /experiments (or /experiments/{route}) from the admin port and prints, per route,
one line per variant (traffic, errors, latency, quality) and one per test with its verdict.
The demo prints the same tables.
"""

from __future__ import annotations

import sys

import httpx


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_experiment(exp: dict) -> str:
    lines = [f"route {exp['route']}  (control: {exp['control']})"]
    lines.append(f"  {'variant':<14} {'requests':>8} {'errors':>7} {'p50 ms':>7} {'p95 ms':>7} "
                 f"{'p99 ms':>7} {'labels':>7} {'accuracy':>8} {'auc':>6} {'mae':>7} {'reward':>7}")
    for name, v in exp["variants"].items():
        lat = v.get("latency_ms") or {}
        q = v.get("quality") or {}
        # stats.quality.total_labels, spelled out: importing stats (numba) would add ~0.5 s to
        # this command's start
        labels = v["labels"]["labels"] + v["labels"]["regression_labels"] + v["labels"]["rewards"]
        lines.append(
            f"  {name:<14} {v['requests']:>8} {_num(v.get('error_rate'), '.2%'):>7} "
            f"{_num(lat.get('p50'), '.2f'):>7} {_num(lat.get('p95'), '.2f'):>7} "
            f"{_num(lat.get('p99'), '.2f'):>7} {labels:>7.0f} {_num(q.get('accuracy'), '.3f'):>8} "
            f"{_num(q.get('auc'), '.3f'):>6} {_num(q.get('mae'), '.3g'):>7} "
            f"{_num(q.get('mean_reward'), '.3g'):>7}")
    if len(exp["variants"]) < 2:
        lines.append("  one variant: nothing to compare (an experiment needs a route with "
                     "`variants`)")
    elif not exp["tests"]:
        lines.append("  no tests yet: each needs 30 requests or labels per variant")
    for t in exp["tests"]:
        seq = t["sequential"]
        lines.append(f"  {t['candidate']} vs {exp['control']}, {t['metric']} ({t['method']}): "
                     f"{t['verdict']}; sequential p={seq['p_value']:.3g}"
                     f"{' (significant)' if seq['significant'] else ''}")
    return "\n".join(lines)


def fetch_report(admin_url: str, route: str | None = None, timeout: float = 10.0) -> list[dict]:
    url = admin_url.rstrip("/") + ("/experiments" if route is None else f"/experiments/{route}")
    r = httpx.get(url, timeout=timeout)
    if r.status_code != 200:
        raise RuntimeError(f"{url}: HTTP {r.status_code}: {r.text[:300]}")
    body = r.json()
    return body["experiments"] if route is None else [body]


def print_report(admin_url: str, route: str | None = None) -> int:
    try:
        experiments = fetch_report(admin_url, route)
    except httpx.HTTPError as exc:
        print(f"driftgate report: cannot reach the gateway's admin port at {admin_url}: {exc} "
              f"(is the gateway running? --admin sets the URL)", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"driftgate report: {exc}", file=sys.stderr)
        return 2
    if not experiments:
        print("no experiments: no route splits traffic between variants")
        return 0
    print("\n\n".join(format_experiment(e) for e in experiments))
    return 0
