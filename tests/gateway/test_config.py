"""Config loading: env substitution, typed validation, errors naming file, line and key."""

import pytest

from gateway.config import ConfigError, load_config, parse_config
from tests.servers import ROOT, run_cli

GOOD = """\
server: {host: 127.0.0.1, port: 8080}
admin: {port: 8090}
upstreams:
  iris-v1:
    url: "http://127.0.0.1:${MODEL_PORT:-9001}"
    timeout: {connect: 0.5, read: 5}
routes:
  - name: iris
    match: {path_prefix: /v2/models/iris, methods: [post, GET]}
    upstream: iris-v1
"""


def test_good_config_with_env_defaults_and_values():
    cfg = parse_config(GOOD, env={})
    assert cfg.upstreams["iris-v1"].url == "http://127.0.0.1:9001"
    assert cfg.upstreams["iris-v1"].timeout.connect == 0.5
    assert cfg.routes[0].match.methods == ["POST", "GET"]
    assert cfg.server.max_body_bytes == 10 * 1024 * 1024
    cfg = parse_config(GOOD, env={"MODEL_PORT": "7000"})
    assert cfg.upstreams["iris-v1"].url == "http://127.0.0.1:7000"


def test_unknown_upstream_names_key_and_line():
    bad = GOOD.replace("    upstream: iris-v1", "    upstream: iris-v9")
    with pytest.raises(ConfigError) as exc:
        parse_config(bad, "config.yaml", env={})
    assert str(exc.value).startswith("config.yaml:10:15 routes[0].upstream: unknown upstream "
                                     "'iris-v9' (did you mean `iris-v1`?) (known: iris-v1)")


@pytest.mark.parametrize("mutate, expected", [
    (lambda t: t.replace("port: 8080", "port: eighty"),
     "config.yaml:1:33 server.port: expected a whole number, got 'eighty'"),
    (lambda t: t.replace("read: 5", "read: -1"),
     "config.yaml:6:35 upstreams.iris-v1.timeout.read: must be > 0.0, got -1"),
    (lambda t: t.replace("admin: {port: 8090}", "admin: {port: 8090, prot: 1}"),
     "config.yaml:2:21 admin.prot: unknown key `prot` (did you mean `port`?)"),
    (lambda t: t.replace('"http://127.0.0.1:${MODEL_PORT:-9001}"', "ftp://x"),
     "config.yaml:5:10 upstreams.iris-v1.url: must be an http:// or https:// URL, got 'ftp://x'"),
    (lambda t: t.replace("${MODEL_PORT:-9001}", "${NOT_SET_ANYWHERE}"),
     "config.yaml:5:10 upstreams.iris-v1.url: environment variable NOT_SET_ANYWHERE is not set"),
    (lambda t: t.replace("path_prefix: /v2/models/iris", "path_prefix: v2"),
     "config.yaml:9:12 routes[0].match: paths start with '/', got 'v2'"),
    (lambda t: t + "  - name: iris\n    match: {path: /x}\n    upstream: iris-v1\n",
     "config.yaml:11:11 routes[1].name: duplicate route name 'iris'"),
    (lambda t: t.replace("    upstream: iris-v1\n", ""),
     "config.yaml:8:5 routes[0]: set exactly one of `upstream` or `variants`"),
    (lambda t: t.replace("    upstream: iris-v1\n", "    variants: [{name: a, upstream: iris-v2}]\n"),
     "config.yaml:10:36 routes[0].variants[0].upstream: unknown upstream 'iris-v2' (did you mean "
     "`iris-v1`?) (known: iris-v1)"),
    (lambda t: t.replace("routes:", "routes: [\n"), "config.yaml:"),
])
def test_bad_configs_name_line_and_key(mutate, expected):
    with pytest.raises(ConfigError) as exc:
        parse_config(mutate(GOOD), "config.yaml", env={})
    assert str(exc.value).startswith(expected), str(exc.value)


def test_check_config_cli(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    done = run_cli("check-config", str(good))
    assert done.returncode == 0, done.stderr
    assert "ok (1 upstreams, 1 routes)" in done.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("upstream: iris-v1", "upstream: nope"))
    done = run_cli("check-config", str(bad))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"{bad}:10:15 routes[0].upstream: unknown upstream 'nope' (known: iris-v1)\n"
        f"   |\n"
        f"10 |     upstream: nope\n"
        f"   |               ^^^^\n"
        f"{bad}: 1 problem; nothing was applied")
    done = run_cli("serve", "--config", str(bad))
    assert done.returncode == 2 and "routes[0].upstream" in done.stderr
    missing = run_cli("check-config", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 2 and "cannot read config" in missing.stderr


def test_example_config_is_valid():
    cfg = load_config(ROOT / "config.example.yaml", env={})
    assert cfg.routes and cfg.upstreams
    assert cfg.server.host == cfg.admin.host == "127.0.0.1"  # the demo and a laptop: local
    # the image sets DRIFTGATE_HOST: reachable from outside its container
    inside = load_config(ROOT / "config.example.yaml", env={"DRIFTGATE_HOST": "0.0.0.0"})
    assert inside.server.host == inside.admin.host == "0.0.0.0"
    assert "DRIFTGATE_HOST=0.0.0.0" in (ROOT / "Dockerfile").read_text()


def test_check_config_finds_what_serve_would_refuse(tmp_path):
    """A baseline file that is missing or unreadable is found without serving, with its line."""
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(GOOD.replace("upstream: iris-v1", "upstream: iris-v1\n    monitor: {baseline: "
                                "nowhere.csv}"))
    done = run_cli("check-config", str(cfg))
    assert done.returncode == 2
    assert done.stderr.startswith(f"{cfg}:11:25 routes[0].monitor.baseline: cannot use "
                                  "'nowhere.csv'")
    (tmp_path / "nowhere.csv").write_text("tenure,plan\n1,basic\n")
    done = run_cli("check-config", str(cfg))
    assert done.returncode == 0, done.stderr


def test_cli_version_help_and_errors_that_name_what_they_concern(tmp_path):
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.startswith("driftgate ")
    done = run_cli("--help")
    assert "exit codes:" in done.stdout
    done = run_cli("check-config", "-h")
    assert "YAML config file" in done.stdout
    done = run_cli("report", "--admin", "http://127.0.0.1:1")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("driftgate report: cannot reach the gateway's admin port at "
                                  "http://127.0.0.1:1")


def test_serve_on_a_busy_port_names_the_address(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "gw.yaml"
        cfg.write_text(GOOD.replace("port: 8080", f"port: {port}").replace("8090", "0"))
        done = run_cli("serve", "--config", str(cfg))
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (server.host / server.port): Address already in " \
           f"use (another process has it: pick another port)" in done.stderr
