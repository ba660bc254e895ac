"""Background jobs: run at once, on their period, once more at stop, and survive a failure."""

from __future__ import annotations

import asyncio

from otpservice.workers.periodic import every


async def test_a_job_runs_at_once_survives_failures_and_runs_once_more_at_stop() -> None:
    runs: list[str] = []

    async def job() -> None:
        runs.append("run")
        if len(runs) == 2:
            raise RuntimeError("a bad moment")

    stop = asyncio.Event()
    task = asyncio.create_task(every(0.05, stop, job))
    await asyncio.sleep(0.18)
    before_stop = len(runs)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert before_stop >= 3  # at once, then every 50 ms, the failure notwithstanding
    assert len(runs) == before_stop + 1  # and a last time when asked to stop
