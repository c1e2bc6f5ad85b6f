"""YAML config: `${VAR}` substitution, typed validation, and errors that name file, line and key.

A bad file raises `ConfigError` with one line per problem, e.g.
`config.yaml:14 routes[0].upstream: unknown upstream 'iris-v9'`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.baselines import load_baseline_file
from gateway.config_errors import (
    Problem,
    SourceMap,
    clean_location,
    did_you_mean,
    duplicate_keys,
    explain,
    format_path,
    from_union,
    render,
    yaml_syntax_error,
)


class ConfigError(Exception):
    """A config file that cannot be used; the message names file, line and key path."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _seconds(value: Any) -> Any:
    """Durations as numbers of seconds or strings like 250ms, 5s, 5m, 1h."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"not a duration: {value!r} (use e.g. 250ms, 5s, 5m, 1h)")
        return float(m.group(1)) * _UNIT[m.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(_seconds), Field(ge=0)]


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    drain_timeout: float = Field(10.0, ge=0)
    # Seconds a client connection may sit idle between requests.
    keep_alive: float = Field(5.0, gt=0)
    # A request's line and headers must all arrive within this (slowloris): else 408, closed.
    header_timeout: Duration = 10.0
    # Client connections at once (also capped below the open-files limit); one more is reset.
    max_connections: int = Field(10_000, ge=1)
    # Request line and headers: bytes and count; beyond, 414 / 431 and the connection closed.
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    max_headers: int = Field(100, ge=1)
    # Proxy processes sharing the public port (gateway.workers); "auto": the CPUs this process
    # may run on. One monitor process and one admin port serve them all.
    workers: int | Literal["auto"] = 1

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 256:
            raise ValueError("workers is 1 to 256, or auto")
        return v

    @property
    def worker_count(self) -> int:
        return len(os.sched_getaffinity(0)) if self.workers == "auto" else int(self.workers)


class AdminConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8090, ge=0, le=65535)
    # /readyz needs each route's upstream to have accepted a connection this recently.
    readiness_interval: float = Field(5.0, gt=0)
    # Bearer token for admin writes (reload, weights); none set: writes are refused (403).
    token: str | None = None
    # Seconds between checks of the config file for changes (0: only SIGHUP / POST reload).
    watch_interval: Duration = 1.0


class TimeoutConfig(_Model):
    connect: float = Field(1.0, gt=0)
    read: float = Field(10.0, gt=0)


class OutlierConfig(_Model):
    """Passive health: eject after consecutive failures (connect errors, timeouts, 5xx)."""
    consecutive_failures: int = Field(5, ge=1)
    base_ejection: Duration = 10.0           # x the number of ejections so far
    max_ejection: Duration = 300.0


class HealthCheckConfig(_Model):
    """Active health: GET `path` every `interval`; 2xx/3xx within `timeout` is a pass."""
    path: str = "/"
    interval: Duration = 5.0
    timeout: Duration = 1.0
    healthy_threshold: int = Field(2, ge=1)
    unhealthy_threshold: int = Field(3, ge=1)


class UpstreamConfig(_Model):
    url: str
    timeout: TimeoutConfig = TimeoutConfig()
    max_connections: int = Field(100, gt=0)
    idle_timeout: float = Field(4.0, gt=0)
    # A response's status line and headers: bytes and count; beyond, the client gets 502.
    max_response_header_bytes: int = Field(64 * 1024, ge=1024)
    max_response_headers: int = Field(100, ge=1)
    outlier: OutlierConfig = OutlierConfig()
    health_check: HealthCheckConfig | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", url):
            raise ValueError(f"must be an http:// or https:// URL, got {url!r}")
        return url


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class MatchConfig(_Model):
    path_prefix: str | None = None
    path: str | None = None
    methods: list[str] = []

    @model_validator(mode="after")
    def _one_path(self) -> MatchConfig:
        if (self.path is None) == (self.path_prefix is None):
            raise ValueError("set exactly one of `path` or `path_prefix`")
        for p in (self.path, self.path_prefix):
            if p is not None and not p.startswith("/"):
                raise ValueError(f"paths start with '/', got {p!r}")
        return self

    @field_validator("methods")
    @classmethod
    def _upper(cls, methods: list[str]) -> list[str]:
        upper = [m.upper() for m in methods]
        for m in upper:
            if m not in HTTP_METHODS:
                raise ValueError(f"unknown HTTP method {m!r}{did_you_mean(m, HTTP_METHODS)} "
                                 f"(methods: {', '.join(HTTP_METHODS)})")
        return upper


class FeatureOverride(_Model):
    min: float | None = None
    max: float | None = None
    categorical: bool | None = None
    bins: int | None = Field(None, ge=1, le=40)
    stat_threshold: float | None = Field(None, gt=0)
    outlier_threshold: float | None = Field(None, gt=0)


class LearnConfig(_Model):
    rows: int = Field(10_000, ge=100, le=1_000_000)
    # false: one reference learned from all variants' traffic, so variants compare alike
    per_variant: bool = False


class JointConfig(_Model):
    """Joint drift (stats.joint): numeric features seen together through fixed directions."""
    enabled: bool = True                    # (needs 2+ numeric features and learned rows)
    directions: int = Field(32, ge=2, le=256)


class RetrainConfig(_Model):
    """Posted on a drift alert, e.g. to a GitHub repository_dispatch endpoint."""
    url: str
    headers: dict[str, str] = {}
    event_type: str = "driftgate-drift"


class FeedbackConfig(_Model):
    """How a route's predictions meet their labels (POST /feedback)."""
    # classification: `label` feedback; regression: `value`; auto: whichever the feedback has
    task: Literal["auto", "classification", "regression"] = "auto"
    prediction: str | None = None           # output column with the predicted label / value
    score: str | None = None                # output column with P(class 1), for AUC
    threshold: float = 0.5                  # score >= threshold: predicted class 1
    classes: int = Field(10, ge=2, le=100)  # labels 0..classes-1; others share one "other"
    window: Duration = 1800.0               # quality gauges and rules look this far back
    slice: Duration = 30.0
    min_labels: int = Field(100, ge=1)      # quality rules stay quiet below this many labels
    # Label-free estimates (stats.cbpe) of binary classifiers with P(class 1): rules on
    # estimated_* wait for this many predictions in the window; probabilities are used as
    # given until this many labelled predictions fit a calibration map.
    min_rows: int = Field(200, ge=1)
    calibration_labels: int = Field(1000, ge=10)


class MonitorConfig(_Model):
    baseline: str | None = None             # CSV / JSON-lines / npz, relative to the config
    learn: LearnConfig | None = None        # or: learn a reference from the first N rows
    # Names for positional rows (a list), or per-feature overrides (a mapping, in order).
    features: list[str] | dict[str, FeatureOverride] = []
    json_path: str | None = None            # protocol json: dotted path to the rows
    prediction_path: str | None = None      # dotted path to the predictions in responses
    window: Duration = 300.0
    slice: Duration = 5.0
    short_window: Duration = 10.0           # judged beside the long one: fast detection
    sample_rate: float = Field(1.0, ge=0, le=1)
    max_capture_bytes: int = Field(1 << 20, gt=0)
    # Distinct feature names a route decodes and learns (a baseline with more raises it to its
    # own count): values under further names are counted, never added to the schema.
    max_features: int = Field(256, ge=1, le=10_000)
    retrain: RetrainConfig | None = None
    feedback: FeedbackConfig = FeedbackConfig()
    joint: JointConfig = JointConfig()

    @model_validator(mode="after")
    def _reference(self) -> MonitorConfig:
        if self.baseline is not None and self.learn is not None:
            raise ValueError("set `baseline` or `learn`, not both")
        if self.slice <= 0 or self.window < self.slice or self.short_window < self.slice:
            raise ValueError("need 0 < slice <= short_window and slice <= window")
        return self

    def baseline_path(self, config_dir: Path) -> Path | None:
        """The baseline file, relative paths taken from the config file's folder."""
        if self.baseline is None:
            return None
        path = Path(self.baseline)
        return path if path.is_absolute() else config_dir / path

    @property
    def feature_names(self) -> list[str]:
        return list(self.features)

    @property
    def overrides(self) -> dict[str, dict]:
        if isinstance(self.features, dict):
            return {k: v.model_dump(exclude_none=True) for k, v in self.features.items()}
        return {}


PROTOCOL = Literal["auto", "kserve-v1", "v2", "mlflow", "tfserving", "json"]


class VariantConfig(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    upstream: str
    weight: float = Field(1.0, ge=0)


class StickyConfig(_Model):
    header: str | None = None
    cookie: str | None = None

    @model_validator(mode="after")
    def _one(self) -> StickyConfig:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("set exactly one of `header` or `cookie`")
        return self


class ShadowConfig(_Model):
    upstream: str
    percent: float = Field(100.0, ge=0, le=100)


class SLOConfig(_Model):
    max_error_rate: float = Field(0.01, ge=0, le=1)   # 5xx and failed exchanges
    max_p99_latency_ms: float = Field(200.0, gt=0)
    min_requests: int = Field(200, ge=1)              # per step, before judging or stepping


class CanaryConfig(_Model):
    variant: str
    steps: list[float] = [5, 25, 50, 100]             # percent of traffic
    step_interval: Duration = 300.0
    slo: SLOConfig = SLOConfig()
    evaluate_every: Duration = 1.0
    # slo: step while the SLOs hold; significant_no_worse: also only once the candidate's error
    # rate is shown no worse than the control's by `margin` (one-sided 95%), rolled back when
    # significantly worse
    promote_when: Literal["slo", "significant_no_worse"] = "slo"
    margin: float = Field(0.01, gt=0, le=1)

    @field_validator("steps")
    @classmethod
    def _percents(cls, steps: list[float]) -> list[float]:
        if not steps or any(not 0 <= s <= 100 for s in steps):
            raise ValueError("steps are percents between 0 and 100")
        return steps


class ExperimentConfig(_Model):
    """The A/B report of a split route (GET /experiments)."""
    enabled: bool = True
    # smallest effect worth detecting, per metric: absolute for error_rate, accuracy, auc,
    # conversion_rate; relative to the control for latency, mae, mean_reward
    min_effect: dict[Literal["error_rate", "accuracy", "auc", "conversion_rate", "latency", "mae",
                             "mean_reward"], float] = {}


class RouteConfig(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    match: MatchConfig
    upstream: str | None = None              # one upstream, or:
    variants: list[VariantConfig] = []       # a weighted split between named variants
    sticky: StickyConfig | None = None       # same key, same variant (absent key: weighted random)
    override_header: str = "X-Driftgate-Variant"
    salt: str = ""                           # change it to reshuffle sticky assignments
    fallback: str | None = None              # variant for when the chosen one is down
    shadow: list[ShadowConfig] = []          # mirrored copies, never returned
    canary: CanaryConfig | None = None       # steps a variant's share forward by SLO
    shadow_max_in_flight: int = Field(100, ge=1)
    retry_budget: float = Field(0.2, ge=0, le=1)  # fallback retries: at most this share extra
    protocol: PROTOCOL = "auto"
    monitor: MonitorConfig | None = None
    control: str | None = None               # the experiment's control; default: first variant
    experiment: ExperimentConfig = ExperimentConfig()

    @model_validator(mode="after")
    def _target(self) -> RouteConfig:
        if (self.upstream is None) == (not self.variants):
            raise ValueError("set exactly one of `upstream` or `variants`")
        if self.variants:
            names = [v.name for v in self.variants]
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate variant names in {names}")
            if sum(v.weight for v in self.variants) <= 0:
                raise ValueError("at least one variant needs a weight above 0")
        if self.control is not None and self.control not in self.variant_names:
            raise ValueError(f"control {self.control!r} is not one of the variants "
                             f"{self.variant_names}")
        return self

    @property
    def control_variant(self) -> str:
        return self.control or self.variant_names[0]

    @property
    def captures(self) -> bool:
        """Whether the monitor process hears of this route's requests: monitored routes, and
        splits (their experiment report)."""
        return self.monitor is not None or (len(self.variants) > 1 and self.experiment.enabled)

    @property
    def variant_names(self) -> list[str]:
        return [v.name for v in self.variants] if self.variants else [self.upstream or ""]

    @property
    def variant_upstreams(self) -> list[tuple[str, str]]:
        """(variant name, upstream name) pairs; a plain route is one variant named after its upstream."""
        if self.variants:
            return [(v.name, v.upstream) for v in self.variants]
        return [(self.upstream or "", self.upstream or "")]


class SinkConfig(_Model):
    type: Literal["webhook", "slack", "pagerduty", "alertmanager"]
    url: str | None = None
    routing_key: str | None = None          # pagerduty
    headers: dict[str, str] = {}
    timeout: float = Field(5.0, gt=0)
    retries: int = Field(3, ge=0, le=10)

    @model_validator(mode="after")
    def _needs(self) -> SinkConfig:
        if self.type == "pagerduty" and not self.routing_key:
            raise ValueError("a pagerduty sink needs `routing_key`")
        if self.type != "pagerduty" and not self.url:
            raise ValueError(f"a {self.type} sink needs `url`")
        return self


class AlertRule(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    # drift / outliers / missing / prediction_drift: the stats/ verdicts;
    # metric: `metric` of a feature above `above` (psi, jensen_shannon, wasserstein, ks,
    # mean_change, std_change, median_change, p95_change, outlier_rate, missing_rate)
    # quality: a model-quality `metric` from feedback (accuracy, auc, f1_macro, mae, ...)
    # below `below` or above `above`, once the window holds `monitor.feedback.min_labels`
    condition: Literal["drift", "outliers", "missing", "prediction_drift", "joint_drift",
                       "metric", "quality"]
    metric: str | None = None
    above: float | None = None
    below: float | None = None
    # Fires once the condition has held this long: at the default 5 s, two evaluations in a
    # row at the default cadence (one window's fluke does not page).
    for_: Duration = Field(5.0, alias="for")
    # Resolves once the condition has been off this long and the measures that tripped it
    # are back within their thresholds (no flapping on a drift that persists).
    keep_firing_for: Duration = 60.0
    severity: Literal["info", "warning", "error", "critical"] = "warning"
    sinks: list[str] | None = None          # None: every sink
    routes: list[str] | None = None         # None: every monitored route
    # While firing, webhook / Slack / PagerDuty posts are repeated this often (Alertmanager
    # gets the alert every minute, to keep it alive; it does its own repeating).
    repeat_interval: Duration = 300.0
    runbook_url: str | None = None          # else alerts.runbook_url

    @model_validator(mode="after")
    def _metric(self) -> AlertRule:
        if self.condition == "metric" and (self.metric is None or self.above is None):
            raise ValueError("a metric rule needs `metric` and `above`")
        if self.condition == "quality" and (self.metric is None or
                                            (self.above is None) == (self.below is None)):
            raise ValueError("a quality rule needs `metric` and one of `above` or `below`")
        return self


class AlertsConfig(_Model):
    evaluate_every: Duration = 5.0
    # Where people reach the admin port (e.g. behind a proxy): alerts link to
    # {external_url}/monitoring?route=..&variant=..&feature=..; default http://{admin host:port}
    external_url: str | None = None
    # Runbook link on every alert, formatted with {alert} {route} {variant} {feature}
    # (e.g. "https://wiki.example.com/driftgate#{alert}"; docs/runbooks.md is a start).
    runbook_url: str | None = None
    sinks: dict[str, SinkConfig] = {}
    rules: list[AlertRule] = []              # empty: the default rules, to every sink


class MonitoringConfig(_Model):
    queue_size: int = Field(10_000, gt=0)    # captures waiting for the monitor; beyond: dropped
    persist_every: Duration = 30.0           # seconds between saves of windows to state_dir


class FeedbackStoreConfig(_Model):
    """POST /feedback on the public port: labels joined to the predictions they are for."""
    enabled: bool = True
    path: str = Field("/feedback", pattern=r"^/")
    max_entries: int = Field(1_000_000, gt=0)  # prediction rows kept for joining (a ring)
    ttl: Duration = 86_400.0                   # older predictions answer 410
    max_batch: int = Field(10_000, gt=0)       # items in one POST
    max_body_bytes: int = Field(8 << 20, gt=0)
    # Feedback bodies being read or waiting for the monitor, all clients together: beyond it a
    # POST gets 503 (Retry-After: 1) before its body is read, so a flood cannot exhaust memory.
    max_pending_bytes: int = Field(32 << 20, gt=0)


class AccessLogConfig(_Model):
    enabled: bool = True
    sample_rate: float = Field(1.0, ge=0, le=1)


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    access_log: AccessLogConfig = AccessLogConfig()


class GatewayConfig(_Model):
    server: ServerConfig = ServerConfig()
    admin: AdminConfig = AdminConfig()
    logging: LoggingConfig = LoggingConfig()
    upstreams: dict[str, UpstreamConfig]
    routes: list[RouteConfig] = Field(min_length=1)
    state_dir: str | None = None             # default: driftgate-state/ beside the config file
    monitoring: MonitoringConfig = MonitoringConfig()
    alerts: AlertsConfig = AlertsConfig()
    feedback: FeedbackStoreConfig = FeedbackStoreConfig()

    def state_path(self, config_dir: Path) -> Path:
        """`state_dir`, relative paths (and the default) taken from the config file's folder."""
        path = Path(self.state_dir or "driftgate-state")
        return path if path.is_absolute() else config_dir / path


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(value: Any, path: tuple, env: dict[str, str], errors: list) -> Any:
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            errors.append((path, f"environment variable {name} is not set (use ${{{name}:-default}})"))
            return m.group(0)
        return _VAR.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute(v, (*path, k), env, errors) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*path, i), env, errors) for i, v in enumerate(value)]
    return value


def _cross_check(cfg: GatewayConfig) -> list[tuple[tuple, str]]:
    errors: list[tuple[tuple, str]] = []
    seen: set[str] = set()
    known = ", ".join(sorted(cfg.upstreams)) or "none defined"

    def unknown_upstream(name: str) -> str:
        return f"unknown upstream {name!r}{did_you_mean(name, cfg.upstreams)} (known: {known})"

    for i, route in enumerate(cfg.routes):
        if route.upstream is not None and route.upstream not in cfg.upstreams:
            errors.append((("routes", i, "upstream"), unknown_upstream(route.upstream)))
        if route.canary is not None and (route.canary.variant not in route.variant_names
                                         or len(route.variants) < 2):
            errors.append((("routes", i, "canary", "variant"),
                           f"canary variant {route.canary.variant!r} must be one of two or more "
                           f"`variants` (have: {', '.join(route.variant_names)})"))
        for j, sh in enumerate(route.shadow):
            if sh.upstream not in cfg.upstreams:
                errors.append((("routes", i, "shadow", j, "upstream"),
                               unknown_upstream(sh.upstream)))
        if route.fallback is not None and route.fallback not in route.variant_names:
            errors.append((("routes", i, "fallback"), f"unknown variant {route.fallback!r}"
                           f"{did_you_mean(route.fallback, route.variant_names)} "
                           f"(variants: {', '.join(route.variant_names)})"))
        for j, v in enumerate(route.variants):
            if v.upstream not in cfg.upstreams:
                errors.append((("routes", i, "variants", j, "upstream"),
                               unknown_upstream(v.upstream)))
        if route.name in seen:
            errors.append((("routes", i, "name"), f"duplicate route name {route.name!r}"))
        seen.add(route.name)
    for i, rule in enumerate(cfg.alerts.rules):
        for sink in rule.sinks or []:
            if sink not in cfg.alerts.sinks:
                errors.append((("alerts", "rules", i, "sinks"), f"unknown sink {sink!r}"
                               f"{did_you_mean(sink, cfg.alerts.sinks)}"))
        for route in rule.routes or []:
            if route not in seen:
                errors.append((("alerts", "rules", i, "routes"), f"unknown route {route!r}"
                               f"{did_you_mean(route, seen)}"))
    if cfg.server.port and cfg.server.port == cfg.admin.port and cfg.server.host == cfg.admin.host:
        errors.append((("admin", "port"), "admin port must differ from server port"))
    return errors


def file_problems(cfg: GatewayConfig, config_dir: Path) -> list[tuple[tuple, str]]:
    """Files the config names that `serve` could not use (baselines), found without serving."""
    problems: list[tuple[tuple, str]] = []
    for i, rc in enumerate(cfg.routes):
        path = rc.monitor.baseline_path(config_dir) if rc.monitor is not None else None
        if path is None:
            continue
        try:
            if path.suffix != ".npz":
                load_baseline_file(path)
            elif not path.is_file():
                raise FileNotFoundError(f"no such file: {path}")
        except (OSError, ValueError) as exc:
            problems.append((("routes", i, "monitor", "baseline"),
                             f"cannot use {rc.monitor.baseline!r}: {exc}"))
    return problems


def check_files(cfg: GatewayConfig, config_dir: Path) -> None:
    """Raise ConfigError for a file `serve` could not use (for configs not loaded from a file)."""
    problems = file_problems(cfg, config_dir)
    if problems:
        raise ConfigError("\n".join(f"{format_path(path)}: {msg}" for path, msg in problems))


def parse_config(text: str, source: str = "<config>", env: dict[str, str] | None = None,
                 config_dir: Path | None = None) -> GatewayConfig:
    """A validated config; with `config_dir`, the files it names are checked too. Raises
    ConfigError telling every problem at once (gateway.config_errors)."""
    env = dict(os.environ) if env is None else env
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_syntax_error(exc, text, source)) from None
    smap = SourceMap(node)
    if not isinstance(data, dict):
        raise ConfigError(render([Problem((), "expected a mapping with `upstreams` and `routes`")],
                                 text, source, smap))
    problems = duplicate_keys(node)
    unset: list[tuple[tuple, str]] = []
    data = _substitute(data, (), env, unset)
    problems += [Problem(path, msg) for path, msg in unset]
    cfg = None
    try:
        cfg = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems += _validation_problems(exc, data, [path for path, _ in unset])
    if cfg is not None:
        problems += [Problem(path, msg) for path, msg in _cross_check(cfg)]
        if not problems and config_dir is not None:
            problems = [Problem(path, msg) for path, msg in file_problems(cfg, config_dir)]
    if problems:
        raise ConfigError(render(problems, text, source, smap))
    assert cfg is not None
    return cfg


def _validation_problems(exc: ValidationError, data: dict, unset: list[tuple]) -> list[Problem]:
    """pydantic's errors in words, one per spot; none where an unset ${VAR} is the cause; a
    missing key dropped where a misspelled one stands beside it (its "did you mean" says it)."""
    out: dict[tuple, Problem] = {}
    for err in exc.errors():
        union = any(from_union(part) for part in err["loc"])
        err = {**err, "loc": clean_location(tuple(err["loc"]), data)}
        problem = explain(err, GatewayConfig)
        if any(problem.path[:len(u)] == u for u in unset):
            continue
        # a union's alternatives all fail at one spot: the first says it
        out.setdefault((problem.path,) if union else (problem.path, problem.message), problem)
    problems = list(out.values())
    meant = {(p.path[:-1], p.suggests) for p in problems if p.suggests}
    return [p for p in problems if p.missing is None or (p.path, p.missing) not in meant]


def load_config(path: str | Path, env: dict[str, str] | None = None) -> GatewayConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    return parse_config(text, str(path), env, config_dir=path.resolve().parent)
