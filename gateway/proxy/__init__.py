"""The proxy process: listeners, the forwarding path, upstream pools, the admin app.

Never imports numba, llvmlite or scipy (tests/gateway/test_layout.py checks): every proxy worker
stays small and starts fast."""
