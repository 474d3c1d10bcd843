"""Schedules: cron evaluation (``cron``) and the loop that fires due schedules (``scheduler``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fnhost.schedule.scheduler import Scheduler
    from fnhost.services.container import System
    from fnhost.services.schedules import Schedules


def wire_schedules(system: System) -> tuple[Schedules, Scheduler | None]:
    """Make the schedules service and (unless disabled) the scheduler, and hook them up:
    deleting a function deletes its schedules; a changed schedule wakes the scheduler."""
    from fnhost.schedule.scheduler import Scheduler
    from fnhost.services.schedules import Schedules

    schedules = Schedules(system.db, system.access, system.sessions, system.settings)
    system.functions.on_deleted.append(schedules.delete_for_function)
    scheduler = None
    if system.settings.scheduler_enabled:
        scheduler = Scheduler(system)
        schedules.on_changed.append(scheduler.poke)
        system.background.append(scheduler)
    return schedules, scheduler
