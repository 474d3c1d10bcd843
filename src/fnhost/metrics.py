"""Prometheus metrics of one running system, served at ``GET /metrics``.

Each ``System`` owns its own ``CollectorRegistry`` (never the process-global default), so
several systems in one process (tests) do not share counters. Other parts record what
happens through the small methods below; none of them raise, and none take user data
beyond ids, so no secret can reach a label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# call times run from milliseconds (warm fork) to the call timeout (minutes)
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)
# deploys are dominated by environment builds: seconds to minutes
DEPLOY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)
MEMORY_BUCKETS = tuple(float(mb * 1024 * 1024) for mb in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192))

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The metrics named in docs/operations.md, with one method per thing that happens."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.calls_started = Counter(
            "fnhost_calls_started",
            "Calls accepted, by project and function id.",
            ["project", "function_id"],
            registry=r,
        )
        self.calls_finished = Counter(
            "fnhost_calls",
            "Calls that ended, by project, function id and final status.",
            ["project", "function_id", "status"],
            registry=r,
        )
        self.calls_running = Gauge(
            "fnhost_calls_running", "Calls this replica has accepted that have not ended yet.", registry=r
        )
        self.call_duration = Histogram(
            "fnhost_call_duration_seconds",
            "Time from a call's start to its end, by final status.",
            ["status"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.call_queue_wait = Histogram(
            "fnhost_call_queue_wait_seconds",
            "Time a call waited (function still deploying, concurrency limits) before it ran.",
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.call_cpu = Histogram(
            "fnhost_call_cpu_seconds",
            "CPU time (user + system) a call used, by project and function id.",
            ["project", "function_id"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.call_peak_memory = Histogram(
            "fnhost_call_peak_memory_bytes",
            "The most memory a call held at once, by project and function id.",
            ["project", "function_id"],
            buckets=MEMORY_BUCKETS,
            registry=r,
        )
        self.call_starting = Histogram(
            "fnhost_call_starting_seconds",
            "Time from handing a call to the executor until its process ran it (a cold zygote shows here).",
            ["project", "function_id"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.deploys = Counter(
            "fnhost_deploys", "Function deploys that ended, by final status.", ["status"], registry=r
        )
        self.deploy_duration = Histogram(
            "fnhost_deploy_duration_seconds",
            "Time from a function's creation to Ready or Failed, by final status.",
            ["status"],
            buckets=DEPLOY_BUCKETS,
            registry=r,
        )
        self.schedule_fires = Counter(
            "fnhost_schedule_fires", "Calls fired by schedules on this replica.", registry=r
        )
        self.scheduler_lag = Histogram(
            "fnhost_scheduler_lag_seconds",
            "How late a scheduled call was fired after its scheduled time.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.zygote_cache = Counter(
            "fnhost_zygote_cache",
            "Calls that found a warm zygote (hit) or had to start one (miss).",
            ["result"],
            registry=r,
        )
        self.environment_cache = Counter(
            "fnhost_environment_cache",
            "Environment lookups by deploys: reused by content hash (hit) or built (miss).",
            ["result"],
            registry=r,
        )
        self.rate_limited = Counter(
            "fnhost_rate_limited",
            "Requests answered 429 because their principal went over the rate limit.",
            registry=r,
        )
        self.log_streams = Gauge(
            "fnhost_log_streams", "Clients following a call's logs live right now.", registry=r
        )
        # zero-valued children so dashboards see every series from the first scrape
        for result in ("hit", "miss"):
            self.zygote_cache.labels(result)
            self.environment_cache.labels(result)

    # -- calls (calls service / executor) ---------------------------------------------------
    def call_started(self, project: str, function_id: int) -> None:
        self.calls_started.labels(project, str(function_id)).inc()
        self.calls_running.inc()

    def call_finished(
        self,
        project: str,
        function_id: int,
        status: str,
        duration_seconds: float | None = None,
        queue_wait_seconds: float | None = None,
    ) -> None:
        """A call ended (Completed, Failed or Timeout) on this replica."""
        self.calls_finished.labels(project, str(function_id), status).inc()
        self.calls_running.dec()
        if duration_seconds is not None:
            self.call_duration.labels(status).observe(max(0.0, duration_seconds))
        if queue_wait_seconds is not None:
            self.call_queue_wait.observe(max(0.0, queue_wait_seconds))

    def call_used(
        self, project: str, function_id: int, *, cpu_seconds: float, peak_memory_bytes: int, starting_seconds: float
    ) -> None:
        """What a call that ran used (its queue wait and run time are in ``call_finished``)."""
        labels = (project, str(function_id))
        self.call_cpu.labels(*labels).observe(max(0.0, cpu_seconds))
        self.call_peak_memory.labels(*labels).observe(max(0, peak_memory_bytes))
        self.call_starting.labels(*labels).observe(max(0.0, starting_seconds))

    # -- builder ------------------------------------------------------------------------------
    def deploy_finished(self, status: str, duration_seconds: float) -> None:
        self.deploys.labels(status).inc()
        self.deploy_duration.labels(status).observe(max(0.0, duration_seconds))

    def environment(self, hit: bool) -> None:
        self.environment_cache.labels("hit" if hit else "miss").inc()

    # -- executor -------------------------------------------------------------------------------
    def zygote(self, hit: bool) -> None:
        self.zygote_cache.labels("hit" if hit else "miss").inc()

    # -- scheduler ------------------------------------------------------------------------------
    def schedule_fired(self, lag_seconds: float) -> None:
        self.schedule_fires.inc()
        self.scheduler_lag.observe(max(0.0, lag_seconds))

    # -- exposition -----------------------------------------------------------------------------
    def render(self) -> bytes:
        return generate_latest(self.registry)
