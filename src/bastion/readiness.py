"""Waiting for the database and Redis at start, with bounded retries.

In a deployment the auth server, PostgreSQL and Redis often start together
(``docker compose up``, a Kubernetes pod next to a database that is still
recovering). Failing on the first refused connection makes the orchestrator
restart the server in a loop; waiting forever hides a real outage. So
:func:`wait_until_ready` probes every dependency, and while any is down
retries ``retries`` times with exponential backoff (``delay``, doubling,
capped at ``max_delay``), logging each wait. Then it gives up:

- a *required* dependency still down (the database: without it there is no
  signing key and no user) raises :class:`~bastion.errors.ServiceUnavailable`
  naming it, so the process exits and its supervisor sees why;
- an *optional* one (Redis) is logged as an error and start-up goes on: every
  request that needs it already fails closed with 503, ``/health`` answers 503
  so a load balancer keeps traffic away, and the client reconnects by itself
  once Redis is back, with no restart.

The sleep is injected: tests pass one that records the delays (and may start
the missing server), so they never wait on a wall clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping

from bastion.errors import ServiceUnavailable

__all__ = ["Probe", "Sleep", "backoff_delays", "wait_until_ready"]

logger = logging.getLogger("bastion.startup")

Probe = Callable[[], Awaitable[bool]]
"""Answers whether one dependency is reachable; must not raise for "down"."""

Sleep = Callable[[float], Awaitable[None]]

MAX_DELAY = 10.0
"""Seconds: the longest single wait between two attempts."""


def backoff_delays(retries: int, delay: float, max_delay: float = MAX_DELAY) -> list[float]:
    """The waits before each retry: ``delay``, doubling, each at most ``max_delay``."""
    return [min(delay * 2**n, max_delay) for n in range(retries)]


async def wait_until_ready(
    probes: Mapping[str, Probe],
    *,
    retries: int,
    delay: float,
    max_delay: float = MAX_DELAY,
    optional: Collection[str] = (),
    sleep: Sleep = asyncio.sleep,
) -> set[str]:
    """Probe until every dependency answers or the retries run out.

    Returns the ``optional`` dependencies still down (empty when all are up);
    raises :class:`ServiceUnavailable` if a required one is. Only the
    dependencies still down are probed again. The log names dependencies and
    waits, never a URL (it may carry a password)."""
    pending = dict(probes)
    waits = backoff_delays(retries, delay, max_delay)
    for attempt in range(retries + 1):
        results = await asyncio.gather(*(probe() for probe in pending.values()))
        pending = {
            name: probe
            for (name, probe), ok in zip(pending.items(), results, strict=True)
            if not ok
        }
        if not pending:
            if attempt:
                logger.info("start-up: dependencies reachable after %d retries", attempt)
            return set()
        if attempt == retries:
            break
        logger.warning(
            "start-up: %s unreachable; retry %d of %d in %.2f s",
            ", ".join(sorted(pending)),
            attempt + 1,
            retries,
            waits[attempt],
        )
        await sleep(waits[attempt])
    required = sorted(set(pending) - set(optional))
    if required:
        names = ", ".join(required)
        logger.error("start-up: %s unreachable after %d retries; giving up", names, retries)
        raise ServiceUnavailable(f"Unreachable at start: {names}.")
    down = set(pending)
    logger.error(
        "start-up: %s unreachable after %d retries; starting without it: requests that "
        "need it answer 503 and /health reports it until it is back",
        ", ".join(sorted(down)),
        retries,
    )
    return down
