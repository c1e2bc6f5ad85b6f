"""What crosses the channel between the supervisor and each worker process (a socket pair,
length-prefixed pickle frames as in gateway.link.frames), and in which order.

supervisor -> worker:
  CONFIG     (config JSON, config dir, worker index): first, and again on every reload
  WEIGHTS    (route, {variant: weight}): a weights PUT on the admin port
  CANARY     (route, (step, state, reason)): the one deciding canary moved
  ANSWER     (token, (HTTP status, JSON body)) for a worker's ASK
  FLUSH      (token): send the captures queued so far now, then FLUSHED (before a label is
             joined, so a prediction another worker served is in the monitor first)
  DRAIN      stop accepting, let requests in flight finish (server.drain_timeout), exit
worker -> supervisor:
  READY      (pid) once it accepts connections
  CAPTURES   (count, a ready monitor frame): forwarded to the monitor process as they are
  ASK        (token, Question, data): /feedback on the public port, answered by the monitor
  METRICS    its Prometheus families (running totals), every REPORT_EVERY seconds
  CANARY     {route: tally}: each canary's counts since the last report (routing.canary)
  RELOADED   (ok, message) after a CONFIG past the first
  FLUSHED    (token) after the CAPTURES a FLUSH asked for
"""

from __future__ import annotations

from enum import IntEnum

REPORT_EVERY = 0.5  # seconds between a worker's METRICS / CANARY reports


class ToWorker(IntEnum):
    CONFIG = 1
    WEIGHTS = 2
    CANARY = 3
    ANSWER = 4
    DRAIN = 5
    FLUSH = 6


class FromWorker(IntEnum):
    READY = 1
    CAPTURES = 2
    ASK = 3
    METRICS = 4
    CANARY = 5
    RELOADED = 6
    FLUSHED = 7
