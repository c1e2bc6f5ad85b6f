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
    for name, v in exp["variants"].items():
        est = v.get("estimated_quality") or {}
        if est.get("estimated_accuracy") is not None:
            realized = est.get("realized_accuracy")
            how = "calibrated" if est.get("calibrated") else "probabilities as given"
            lines.append(
                f"  {name}: estimated accuracy {est['estimated_accuracy']:.3f} over the last "
                f"{est['rows']:.0f} predictions ({how}), "
                f"realized {_num(realized, '.3f')} on the {est.get('labelled_share', 0):.0%} "
                f"labelled so far")
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


_POINTS = ("error_rate", "accuracy", "conversion_rate", "auc")


def _amount(metric: str, value: float) -> str:
    if metric in _POINTS:
        return f"{abs(value) * 100:.1f} points"
    return f"{abs(value):.3g} ms" if metric == "latency" else f"{abs(value):.3g}"


def explain_test(exp: dict, test: dict) -> str:
    """One test's verdict as a sentence: which variant, which metric, the interval of the
    difference (candidate minus control), and what the sequential test adds."""
    control, candidate, metric = exp["control"], test["candidate"], test["metric"]
    effect, (lo, hi) = test["effect"], test["ci95"]
    scale = 100 if metric in _POINTS else 1
    unit = " points" if metric in _POINTS else (" ms" if metric == "latency" else "")
    interval = f"{lo * scale:+.1f} to {hi * scale:+.1f}{unit}"
    p_value = test["p_value"]
    p_text = "p<0.001" if p_value < 0.001 else f"p={p_value:.2g}"
    direction = "higher" if effect > 0 else "lower"
    if test["significant"]:
        head = (f"{candidate} scores {_amount(metric, effect)} {direction} than {control} on "
                f"{metric} ({candidate} is {'better' if test['better'] == 'candidate' else 'worse'}"
                f"): the 95% interval of {candidate} minus {control} is {interval}, a real "
                f"difference ({p_text})")
    else:
        head = (f"{candidate} and {control} do not differ on {metric} so far: the 95% interval "
                f"of {candidate} minus {control} is {interval}, which includes 0 ({p_text})")
    seq = test["sequential"]
    seq_p = f"p={seq['p_value']:.2g}" if seq["p_value"] >= 0.001 else "p<0.001"
    if seq["significant"]:
        tail = (f"the sequential test, valid however often you look, agrees ({seq_p}): the "
                f"experiment can stop")
    else:
        tail = (f"the sequential test, valid however often you look, is not yet sure ({seq_p}): "
                f"keep the experiment running before acting on it")
    return f"{head}; {tail}."


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
