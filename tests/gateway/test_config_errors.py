"""Config errors as a newcomer meets them: every problem at once, in line order, each with
file:line:column, the key path, the value, what was expected in words, a "did you mean", and
the line with a caret. Each case is the exact text a user sees."""

import pytest

from gateway.config import ConfigError, parse_config

HEAD = """\
upstreams:
  iris-v1: {url: "http://127.0.0.1:9001"}
routes:
  - name: iris
"""


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "gw.yaml", env={})
    return str(exc.value)


def first_line(text: str) -> str:
    return problems(text).splitlines()[0]


def test_every_problem_at_once_in_line_order_with_the_spot_shown():
    text = """\
server: {prot: 8080}
upstreams:
  iris-v1: {url: "http://127.0.0.1:${UNSET_VAR}"}
routes:
  - name: iris
    macth: {path_prefix: /v2/models/iris}
    upstream: iris-v1
    protocol: v3
"""
    assert problems(text) == """\
gw.yaml:1:10 server.prot: unknown key `prot` (did you mean `port`?)
  |
1 | server: {prot: 8080}
  |          ^^^^
gw.yaml:3:18 upstreams.iris-v1.url: environment variable UNSET_VAR is not set (use ${UNSET_VAR:-default})
  |
3 |   iris-v1: {url: "http://127.0.0.1:${UNSET_VAR}"}
  |                  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
gw.yaml:6:5 routes[0].macth: unknown key `macth` (did you mean `match`?)
  |
6 |     macth: {path_prefix: /v2/models/iris}
  |     ^^^^^
PROTOCOL_LINE
  |
8 |     protocol: v3
  |               ^^
gw.yaml: 4 problems; nothing was applied""".replace("PROTOCOL_LINE", (
        "gw.yaml:8:15 routes[0].protocol: expected one of `auto`, `kserve-v1`, `v2`, `mlflow`, "
        "`tfserving`, `json`, got 'v3'"))


@pytest.mark.parametrize("tail, expected", [
    ("    match: {path: /x}\n    upstream: iris-v1\n    protocol: kserve_v1\n",
     "gw.yaml:7:15 routes[0].protocol: expected one of `auto`, `kserve-v1`, `v2`, `mlflow`, "
     "`tfserving`, `json`, got 'kserve_v1' (did you mean `kserve-v1`?)"),
    ("    match: {path: /x, methods: POST}\n    upstream: iris-v1\n",
     "gw.yaml:5:32 routes[0].match.methods: expected a list (`[a, b]`), e.g. `[POST]`, got 'POST'"),
    ("    match: {path: /x, methods: [POTS]}\n    upstream: iris-v1\n",
     "gw.yaml:5:32 routes[0].match.methods: unknown HTTP method 'POTS' (did you mean `POST`?) "
     "(methods: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)"),
    ("    match:\n    upstream: iris-v1\n",
     "gw.yaml:5:11 routes[0].match: expected a mapping (`key: value`), got nothing (an empty "
     "value)"),
    ("    match: {path: /x}\n    upstream: iris-v2\n",
     "gw.yaml:6:15 routes[0].upstream: unknown upstream 'iris-v2' (did you mean `iris-v1`?) "
     "(known: iris-v1)"),
    ("    match: {path: /x}\n    upstream: iris-v1\n    upstream: iris-v1\n",
     "gw.yaml:7:5 routes[0].upstream: `upstream` is given twice (first on line 6); keep one"),
    ("    match: {path: /x}\n    upstream: iris-v1\n    monitor: {features: 5, learn: {rows: 10}}\n",
     "gw.yaml:7:25 routes[0].monitor.features: expected a list (`[a, b]`), got 5"),
])
def test_each_message_names_the_value_and_what_was_expected(tail, expected):
    assert first_line(HEAD + tail) == expected


def test_bad_names_say_which_characters_are_allowed():
    text = HEAD.replace("name: iris", 'name: "iris model"') + \
        "    match: {path: /x}\n    upstream: iris-v1\n"
    assert first_line(text) == ("gw.yaml:4:11 routes[0].name: use letters, digits, `_`, `.` and "
                                "`-` only, got 'iris model'")


def test_settings_once_accepted_silently_are_refused():
    assert first_line("logging: {level: verbose}\n" + HEAD + "    match: {path: /x}\n"
                      "    upstream: iris-v1\n") == (
        "gw.yaml:1:18 logging.level: expected one of `debug`, `info`, `warning`, `error`, got "
        "'verbose'")
    assert first_line('upstreams:\n  a: {url: "http://127.0.0.1:1"}\nroutes: []\n') == (
        "gw.yaml:3:9 routes: needs at least 1 entry, got an empty list")


@pytest.mark.parametrize("text, expected", [
    ("server:\n  port: 8080\n   host: x\n", """\
gw.yaml:3:8 invalid YAML: mapping values are not allowed here
  |
3 |    host: x
  |        ^ a colon in a value, a key indented under a value, or a colon missing on a line above"""),
    ("server:\n\tport: 8080\n", """\
gw.yaml:2:1 invalid YAML: found character '\\t' that cannot start any token
  |
2 |  port: 8080
  | ^ YAML indents with spaces only: replace the tab"""),
    ("routes: [\n", """\
gw.yaml:1:10 invalid YAML: expected the node content, but found '<stream end>'
  |
1 | routes: [
  |          ^ a quote or bracket is not closed"""),
])
def test_yaml_syntax_errors_show_a_caret_and_a_hint(text, expected):
    assert problems(text) == expected


def test_no_internal_class_names_leak():
    text = HEAD + "    match: {path: /x}\n    upstream: iris-v1\n    monitor: {features: 5}\n" \
        "  - {name: b, match: , upstream: iris-v1}\n"
    message = problems(text)
    for leak in ("Config", "instance of", "dict[", "list[str]", "Input should"):
        assert leak not in message, message
