"""Real third-party servers (Debian packages) started by tests; .ci/run installs them."""

import os
import shutil

import pytest


def require_binary(name: str) -> str:
    """Path of a peer binary. Missing: skip locally, fail when DRIFTGATE_REQUIRE_PEERS=1 (CI)."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path:
        return path
    message = f"{name} not installed (apt-get install {name}); .ci/run installs it"
    if os.environ.get("DRIFTGATE_REQUIRE_PEERS") == "1":
        pytest.fail(message)
    pytest.skip(message)
