# driftgate: the gateway as the entrypoint. Mount your config at /etc/driftgate/config.yaml
# (bind server.host and admin.host to 0.0.0.0 inside a container: the built-in example does,
# through DRIFTGATE_HOST); monitoring state goes to /var/lib/driftgate (mount a volume there to
# keep learned references across restarts).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    DRIFTGATE_STATE_DIR=/var/lib/driftgate \
    DRIFTGATE_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY routing ./routing
COPY stats ./stats
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /app driftgate \
 && mkdir -p /etc/driftgate /var/lib/driftgate \
 && chown driftgate /var/lib/driftgate
COPY config.example.yaml /etc/driftgate/config.yaml

USER driftgate
VOLUME /var/lib/driftgate
EXPOSE 8080 8090

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8090/healthz', timeout=2).status != 200)"

ENTRYPOINT ["driftgate"]
CMD ["serve", "--config", "/etc/driftgate/config.yaml"]
