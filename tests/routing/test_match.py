"""routing.RouteTable: the most specific rule wins, prefixes match on segment boundaries."""

from routing import RouteRule, RouteTable


def table():
    return RouteTable([
        RouteRule("catch-all", path_prefix="/"),
        RouteRule("models", path_prefix="/v1/models"),
        RouteRule("iris", path_prefix="/v1/models/iris"),
        RouteRule("iris-get", path_prefix="/v1/models/iris", methods=frozenset({"GET"})),
        RouteRule("exact", path="/v1/models/iris:predict"),
    ])


def test_specific_beats_general_whatever_the_order():
    t = table()
    assert t.match("POST", "/v1/models/iris:predict") == "exact"
    assert t.match("POST", "/v1/models/iris/versions/2") == "iris"
    assert t.match("GET", "/v1/models/iris/versions/2") == "iris-get"
    assert t.match("POST", "/v1/models/other") == "models"
    assert t.match("GET", "/healthz") == "catch-all"


def test_prefix_needs_a_boundary():
    t = RouteTable([RouteRule("iris", path_prefix="/v1/models/iris")])
    assert t.match("POST", "/v1/models/iris") == "iris"
    assert t.match("POST", "/v1/models/iris:predict") == "iris"
    assert t.match("POST", "/v1/models/iris/infer") == "iris"
    assert t.match("POST", "/v1/models/irises") is None
    assert t.match("POST", "/v1/models") is None


def test_methods_restrict_and_cache_stays_bounded():
    t = RouteTable([RouteRule("r", path_prefix="/x", methods=frozenset({"POST"}))])
    assert t.match("GET", "/x") is None
    for i in range(10_000):
        t.match("POST", f"/x/{i}")
    assert len(t._cache) <= 4096
