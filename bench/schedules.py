"""Schedule fire delay: a call's actual start minus its scheduled time, on a real server.

    uv run python bench/schedules.py [--seconds 30] [--schedules 3]

Creates ``--schedules`` schedules of one trivial function with the official cognite-sdk,
firing every second (the scheduler's seconds-resolution cron extension,
``FNHOST_SCHEDULER_SECONDS_CRON=true``, which only adds a leading seconds field to the
standard evaluator), lets them run for ``--seconds``, then reads every scheduled call back
and reports ``startTime - scheduledTime`` (the call row is written when the scheduler starts
the call) and ``endTime - scheduledTime``. Also checks that no due time fired twice and none
was skipped. Writes ``bench/results/schedules.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Api, live_server, print_table, summary, write_results, zip_of


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--schedules", type=int, default=3)
    args = parser.parse_args()

    with live_server(env={"FNHOST_SCHEDULER_SECONDS_CRON": "true"}) as live:
        creds = live.create_client("bench")
        api = Api(creds)
        fid = api.deploy("scheduled", zip_of({"handler.py": "def handle(data):\n    return data\n"}))
        client = live.client(creds)
        cc = {"client_id": creds["client_id"], "client_secret": creds["client_secret"]}
        schedules = [
            client.functions.schedules.create(
                name=f"every-second-{i}", cron_expression="* * * * * *", function_id=fid,
                client_credentials=cc, data={"n": i},
            )
            for i in range(args.schedules)
        ]
        time.sleep(args.seconds)
        for s in schedules:
            client.functions.schedules.delete(id=s.id)
        time.sleep(2)  # calls already started end
        calls = list(client.functions.calls.list(function_id=fid, limit=None))

    by_schedule: dict[int, list[int]] = {}
    for c in calls:
        if c.schedule_id is not None:
            by_schedule.setdefault(c.schedule_id, []).append(c.scheduled_time)
    problems = []
    for sid, times in by_schedule.items():
        times.sort()
        if len(set(times)) != len(times):
            problems.append(f"schedule {sid}: a due time fired twice")
        expected = list(range(times[0], times[-1] + 1000, 1000))
        if times != expected:
            problems.append(f"schedule {sid}: {len(expected) - len(times)} due times skipped")
    scheduled = [c for c in calls if c.schedule_id is not None]
    not_completed = [c for c in scheduled if c.status != "Completed"]
    start_delay = [(c.start_time - c.scheduled_time) / 1000 for c in scheduled]
    end_delay = [(c.end_time - c.scheduled_time) / 1000 for c in scheduled if c.end_time]
    print_table(
        f"Schedule fire delay ({len(scheduled)} fires of {args.schedules} schedules, every second, "
        f"{args.seconds:.0f} s)",
        [
            ("call start - scheduled time", summary(start_delay), f"max {max(start_delay) * 1000:.0f} ms"),
            ("call end - scheduled time", summary(end_delay), f"max {max(end_delay) * 1000:.0f} ms"),
        ],
    )
    print(f"\nfires not Completed: {len(not_completed)}; duplicate or skipped due times: {problems or 'none'}")
    path = write_results(
        "schedules",
        {
            "fires": len(scheduled),
            "start_delay_s": summary(start_delay) | {"max": max(start_delay)},
            "end_delay_s": summary(end_delay) | {"max": max(end_delay)},
            "not_completed": len(not_completed),
            "problems": problems,
        },
    )
    print(f"written to {path}")
    return 1 if problems or not_completed else 0


if __name__ == "__main__":
    sys.exit(main())
