"""YAML config: `${VAR}` substitution, typed validation, and errors that name file, line and key.

A bad file raises `ConfigError` with one line per problem, e.g.
`config.yaml:14 routes[0].upstream: unknown upstream 'iris-v9'`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(Exception):
    """A config file that cannot be used; the message names file, line and key path."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    drain_timeout: float = Field(10.0, ge=0)
    # Seconds a client connection may sit idle between requests.
    keep_alive: float = Field(5.0, gt=0)


class AdminConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8090, ge=0, le=65535)
    # /readyz needs each route's upstream to have accepted a connection this recently.
    readiness_interval: float = Field(5.0, gt=0)


class TimeoutConfig(_Model):
    connect: float = Field(1.0, gt=0)
    read: float = Field(10.0, gt=0)


class UpstreamConfig(_Model):
    url: str
    timeout: TimeoutConfig = TimeoutConfig()
    max_connections: int = Field(100, gt=0)
    idle_timeout: float = Field(4.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", url):
            raise ValueError(f"must be an http:// or https:// URL, got {url!r}")
        return url


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
        return [m.upper() for m in methods]


class RouteConfig(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    match: MatchConfig
    upstream: str


class AccessLogConfig(_Model):
    enabled: bool = True
    sample_rate: float = Field(1.0, ge=0, le=1)


class LoggingConfig(_Model):
    level: str = "info"
    format: str = Field("auto", pattern=r"^(auto|json|console)$")
    access_log: AccessLogConfig = AccessLogConfig()


class GatewayConfig(_Model):
    server: ServerConfig = ServerConfig()
    admin: AdminConfig = AdminConfig()
    logging: LoggingConfig = LoggingConfig()
    upstreams: dict[str, UpstreamConfig]
    routes: list[RouteConfig]


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


def _line_index(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map every key path in the YAML document to its 1-based line."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, key_node.value)
            out[child] = key_node.start_mark.line + 1
            _line_index(value_node, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*path, i)] = item.start_mark.line + 1
            _line_index(item, (*path, i), out)
    return out


def format_path(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top)"


def _line_for(lines: dict[tuple, int], path: tuple) -> int:
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path, 1)


def _cross_check(cfg: GatewayConfig) -> list[tuple[tuple, str]]:
    errors: list[tuple[tuple, str]] = []
    seen: set[str] = set()
    for i, route in enumerate(cfg.routes):
        if route.upstream not in cfg.upstreams:
            known = ", ".join(sorted(cfg.upstreams)) or "none defined"
            errors.append((("routes", i, "upstream"),
                           f"unknown upstream {route.upstream!r} (known: {known})"))
        if route.name in seen:
            errors.append((("routes", i, "name"), f"duplicate route name {route.name!r}"))
        seen.add(route.name)
    if cfg.server.port and cfg.server.port == cfg.admin.port and cfg.server.host == cfg.admin.host:
        errors.append((("admin", "port"), "admin port must differ from server port"))
    return errors


def parse_config(text: str, source: str = "<config>",
                 env: dict[str, str] | None = None) -> GatewayConfig:
    env = dict(os.environ) if env is None else env
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise ConfigError(f"{source}:{line} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1 (top): expected a mapping with `upstreams` and `routes`")
    lines = _line_index(node) if node is not None else {}
    problems: list[tuple[tuple, str]] = []
    data = _substitute(data, (), env, problems)
    cfg = None
    if not problems:
        try:
            cfg = GatewayConfig.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(err["loc"])
                # Model-level validators report at the model; "extra" errors at the bad key.
                msg = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    msg = "unknown key"
                problems.append((loc, msg))
    if cfg is not None:
        problems = _cross_check(cfg)
    if problems:
        raise ConfigError("\n".join(
            f"{source}:{_line_for(lines, path)} {format_path(path)}: {msg}"
            for path, msg in problems))
    assert cfg is not None
    return cfg


def load_config(path: str | Path, env: dict[str, str] | None = None) -> GatewayConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    return parse_config(text, str(path), env)
