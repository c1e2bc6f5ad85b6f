"""`driftgate` command line: serve, check-config, demo-model, baseline, report, demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gateway
from gateway.config import ConfigError, GatewayConfig, load_config


def _load(path: str) -> GatewayConfig | None:
    """The config in `path`, or None after printing why not (exit code 2 for the caller)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _workers_arg(text: str) -> str:
    if text != "auto" and not (text.isdigit() and 1 <= int(text) <= 256):
        raise argparse.ArgumentTypeError("N (1 to 256) or auto")
    return text


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging, get_logger
    from gateway.proxy.server import run

    if (cfg := _load(args.config)) is None:
        return 2
    if args.workers is not None:  # the flag wins over server.workers
        workers = "auto" if args.workers == "auto" else int(args.workers)
        cfg = cfg.model_copy(update={"server": cfg.server.model_copy(update={"workers": workers})})
    configure_logging(cfg.logging.level, cfg.logging.format)
    get_logger().info("config loaded", file=str(args.config), upstreams=len(cfg.upstreams),
                      routes=len(cfg.routes), workers=cfg.server.worker_count)
    path = Path(args.config).resolve()
    if cfg.server.worker_count > 1:
        from gateway.workers.supervisor import Supervisor
        return run(cfg, path.parent, path, kind=Supervisor)
    return run(cfg, path.parent, path)


def _cmd_check_config(args: argparse.Namespace) -> int:
    if (cfg := _load(args.file)) is None:
        return 2
    print(f"{args.file}: ok ({len(cfg.upstreams)} upstreams, {len(cfg.routes)} routes)")
    return 0


def _cmd_demo_model(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.tools.demo_model import build_model_app

    app = build_model_app(args.name, version=args.version, latency_ms=args.latency_ms,
                          error_rate=args.error_rate, seed=args.seed,
                          bias_shift=args.bias_shift)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools")
    return 0


def _cmd_baseline_build(args: argparse.Namespace) -> int:
    """A reference made offline: schema + reference state, loadable as `monitor.baseline`."""
    from gateway.baselines import load_baseline_file
    from stats import fit_baseline, save_states
    from stats.joint import fit_joint_columns, joint_arrays

    source = Path(args.source)
    try:
        columns = load_baseline_file(source)
        if columns is None:
            raise ValueError("the source is already an npz baseline")
        schema, reference = fit_baseline(columns, n_bins=args.bins,
                                         categorical=args.categorical or ())
    except (OSError, ValueError) as exc:
        print(f"driftgate: cannot build a baseline from {source}: {exc}", file=sys.stderr)
        return 2
    joint = fit_joint_columns(columns, schema)  # joint drift's reference, from the same rows
    save_states(args.out, schema, {"reference": reference}, joint_arrays(*joint) if joint else None)
    kinds = ", ".join(f"{f.name} ({f.kind})" for f in schema.features)
    print(f"{args.out}: {reference.n_rows} rows, {schema.n_features} features: {kinds}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.tools.demo import run_demo

    return run_demo(duration=args.duration, rate=args.rate)


def _cmd_report(args: argparse.Namespace) -> int:
    from gateway.tools.report import print_report

    return print_report(args.admin, args.route)


EXIT_CODES = """exit codes:
  0  done (serve: stopped cleanly after SIGTERM or Ctrl-C)
  1  serve could not open a listener (the address is named), or the demo saw failures
  2  a bad config file, a bad argument, or a gateway that cannot be reached (report)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftgate", description="An observable gateway in front of ML model servers.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"driftgate {gateway.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--config", "-c", required=True, help="YAML config file")
    p.add_argument("--workers", "-w", type=_workers_arg, default=None,
                   help="proxy processes sharing the public port: N or auto (the CPUs this "
                        "process may use); default: server.workers in the config, else 1")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("check-config", help="validate a config file without serving")
    p.add_argument("file", help="YAML config file: every problem is reported, with its line")
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser("demo-model", help="run the demo churn model server (V1, V2, MLflow)")
    p.add_argument("--port", type=int, default=9001, help="port to listen on")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--name", default="churn", help="model name in its URLs (/v2/models/NAME)")
    p.add_argument("--version", default="v1", help="model version it reports")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added latency per prediction")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of predictions that fail 500")
    p.add_argument("--seed", type=int, default=0, help="seed of the model's training data")
    p.add_argument("--bias-shift", type=float, default=0.0,
                   help="add this to the model's logit: a less accurate variant for A/B demos")
    p.set_defaults(func=_cmd_demo_model)

    p = sub.add_parser("baseline", help="reference data for monitoring")
    bsub = p.add_subparsers(dest="baseline_command", required=True)
    b = bsub.add_parser("build", help="fit a baseline (.npz) from a CSV or JSON-lines file")
    b.add_argument("--from", dest="source", required=True, help="training data: .csv or .jsonl")
    b.add_argument("--out", required=True, help="where to write the .npz")
    b.add_argument("--bins", type=int, default=20, help="quantile bins per numeric feature")
    b.add_argument("--categorical", nargs="*", help="features to treat as categorical")
    b.set_defaults(func=_cmd_baseline_build)

    p = sub.add_parser("report", help="print the A/B experiments of a running gateway")
    p.add_argument("--admin", default="http://127.0.0.1:8090", help="the gateway's admin URL")
    p.add_argument("--route", default=None, help="one route (default: every split route)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("demo", help="two demo models + the gateway + traffic, then keep serving")
    p.add_argument("--duration", type=float, default=None,
                   help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--rate", type=float, default=50.0, help="demo requests per second")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
