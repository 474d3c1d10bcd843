"""Schedules' infrastructure: cron evaluation (``cron``). The loop that fires due schedules
is a domain service, ``services/scheduler.py``."""
