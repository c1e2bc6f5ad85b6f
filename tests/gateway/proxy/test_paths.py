"""Path normalisation (RFC 3986 5.2.4 dot segments, unreserved escapes) and the slash policy."""

import pytest

from gateway.proxy.paths import UnsafePath, decoded, normalize


@pytest.mark.parametrize("raw, expected", [
    (b"/v2/models/iris/infer", b"/v2/models/iris/infer"),
    (b"/public/nginx/../../internal/secret", b"/internal/secret"),
    (b"/public/nginx/%2e%2e/%2E%2e/internal/secret", b"/internal/secret"),
    (b"/a/./b/../c", b"/a/c"),
    (b"/a/.", b"/a/"),
    (b"/a/..", b"/"),
    (b"/../../x", b"/x"),
    (b"/a//../b", b"/a/b"),
    (b"/a/.hidden/..x", b"/a/.hidden/..x"),
    (b"/a/%41%7e%20b", b"/a/A~%20b"),   # unreserved decoded, the rest kept as sent
    (b"/v2/models/org%2Fmodel/infer", b"/v2/models/org%2Fmodel/infer"),  # a name with a slash
    (b"/a/b\\c", b"/a/b\\c"),
    (b"/", b"/"),
])
def test_normal_forms(raw, expected):
    assert normalize(raw) == expected


@pytest.mark.parametrize("raw", [b"/p/..%2f..%2finternal", b"/p/%2F..%2Finternal", b"/p/%5c..",
                                 b"/p/..\\..\\internal", b"/p/%2e%2e%2finternal"])
def test_dot_segments_behind_encoded_slashes_are_refused(raw):
    with pytest.raises(UnsafePath):
        normalize(raw)


def test_the_common_path_is_returned_as_is():
    raw = b"/v1/models/churn:predict"
    assert normalize(raw) is raw
    assert decoded(b"/a/%C3%A9") == "/a/\u00e9"
