"""A worker's Prometheus metrics, scraped over HTTP from real workers on a real database."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import Journal, Spawner
from scraping import Samples, port_in, scrape, value, without_extras
from waiting import wait_for

import pushpop
from pushpop import metrics

pytestmark = pytest.mark.slow

OUTCOMES = ("completed", "retried", "discarded", "lease_lost", "released")


@pytest.fixture
def spawn(dsn: str, tmp_path: Path) -> Iterator[Spawner]:
    spawner = Spawner(dsn, Journal(tmp_path / "journal.txt"))
    yield spawner
    spawner.close()


def outcomes(samples: Samples, topic: str) -> dict[str, float | None]:
    return {o: value(samples, "pushpop_messages_total", topic=topic, outcome=o) for o in OUTCOMES}


def test_a_scraped_worker_process_counts_every_message_by_outcome(dsn: str, spawn: Spawner) -> None:
    with pushpop.Client(dsn) as client:
        for _ in range(3):
            client.push("jobs", json={"do": "ok"})
        for _ in range(2):  # retried once, then discarded: dead ends
            client.push("jobs", json={"do": "fail"}, max_attempts=2)
        client.push("jobs", json={"do": "dead end"})  # discarded by the handler itself
        client.push("jobs", json={"do": "lose lease"})  # lease lost, then completed
        proc = spawn.cli(
            "handlers:observed", "jobs", "--metrics-port", "0", "--retry-base", "10ms",
            "--retry-cap", "10ms", "--no-maintenance",
        )  # fmt: skip
        port = wait_for(lambda: port_in(proc.lines), what="the worker's metrics port")
        expected = {"completed": 4, "retried": 2, "discarded": 3, "lease_lost": 1, "released": 0}

        def settled() -> Samples | None:
            samples = scrape(port)
            return samples if outcomes(samples, "jobs") == expected else None

        samples = wait_for(settled, what=f"outcomes {expected}, output:\n{proc.output()}")
        (stats,) = client.stats()
        assert (stats.completed, stats.discarded, stats.ready, stats.pending) == (4, 3, 0, 0)
    # Ten handler runs: 3 ok, 4 failures, 1 dead end, 2 deliveries of the lost lease.
    assert value(samples, "pushpop_handler_duration_seconds_count", topic="jobs") == 10
    assert value(samples, "pushpop_handlers_in_flight", topic="jobs") == 0
    pops = value(samples, "pushpop_pops_total", topic="jobs")
    empty = value(samples, "pushpop_empty_pops_total", topic="jobs")
    assert pops is not None
    assert empty is not None
    assert pops > empty >= 1
    assert (value(samples, "pushpop_acknowledgement_batch_messages_sum") or 0) >= 4
    assert value(samples, "pushpop_acknowledgement_errors_total", topic="jobs") == 0
    age = value(samples, "pushpop_database_contact_age_seconds")
    assert age is not None
    assert 0 <= age < 5
    assert value(samples, "pushpop_wakeups_total") is not None


def test_the_asyncio_worker_serves_the_same_metrics(dsn: str) -> None:
    async def handler(msg: pushpop.AsyncMessage) -> None:
        if msg.json()["fail"]:
            raise ValueError("bad address")

    async def main() -> Samples:
        async with pushpop.AsyncClient(dsn) as client:
            await client.push("emails", json={"fail": False})
            await client.push("emails", json={"fail": True}, max_attempts=1)
            worker = pushpop.AsyncWorker(client, "emails", handler, metrics_port=0)
            task = asyncio.create_task(worker.run())
            try:
                while True:  # the scrape is blocking I/O: off the event loop
                    if worker.metrics.port is None:  # not serving yet
                        await asyncio.sleep(0.01)
                        continue
                    samples = await asyncio.to_thread(scrape, worker.metrics.port)
                    done = outcomes(samples, "emails")
                    if done["completed"] == 1 and done["discarded"] == 1:
                        return samples
                    await asyncio.sleep(0.01)
            finally:
                worker.stop()
                await asyncio.wait_for(task, 10)

    samples = asyncio.run(asyncio.wait_for(main(), 20))
    assert outcomes(samples, "emails") == dict.fromkeys(OUTCOMES, 0) | {
        "completed": 1, "discarded": 1,
    }  # fmt: skip
    assert value(samples, "pushpop_handler_duration_seconds_count", topic="emails") == 2


def test_a_worker_that_stops_before_its_handler_ends_counts_the_message_released(
    dsn: str,
) -> None:
    started, finish = threading.Event(), threading.Event()

    def handler(msg: pushpop.Message) -> None:
        started.set()
        finish.wait(20)

    with pushpop.Client(dsn) as client:
        client.push("slow", json={})
        worker = pushpop.Worker(client, "slow", handler, shutdown_timeout=0, metrics_port=0)
        runner = threading.Thread(target=worker.run, name="test-worker")
        runner.start()
        try:
            assert started.wait(10)
            worker.stop()
            runner.join(10)
        finally:
            finish.set()
    assert isinstance(worker.metrics, metrics.PrometheusMetrics)
    sample = worker.metrics.registry.get_sample_value
    assert sample("pushpop_messages_total", {"topic": "slow", "outcome": "released"}) == 1
    assert sample("pushpop_messages_total", {"topic": "slow", "outcome": "retried"}) == 0


def test_a_worker_stops_serving_metrics_when_it_stops(dsn: str) -> None:
    with pushpop.Client(dsn) as client:
        worker = pushpop.Worker(client, "jobs", lambda msg: None, metrics_port=0)
        runner = threading.Thread(target=worker.run, name="test-worker")
        runner.start()
        port = wait_for(lambda: worker.metrics.port, what="the metrics port")
        wait_for(lambda: value(scrape(port), "pushpop_pops_total", topic="jobs"), what="a pop")
        worker.stop()
        runner.join(10)
    with pytest.raises(OSError, match="refused"):
        scrape(port)


def test_a_bad_metrics_port_is_refused_before_the_worker_starts(dsn: str) -> None:
    with pushpop.Client(dsn) as client:
        with pytest.raises(pushpop.InvalidArgument, match="metrics_port"):
            pushpop.Worker(client, "jobs", lambda msg: None, metrics_port=70_000)
        with pytest.raises(pushpop.InvalidType, match="metrics_port"):
            pushpop.Worker(client, "jobs", lambda msg: None, metrics_port="9100")  # type: ignore[arg-type]


def test_metrics_port_without_prometheus_client_is_a_one_line_error_naming_the_extra(
    dsn: str,
) -> None:
    done = without_extras(
        "from pushpop.cli import main\n"
        "sys.exit(main(['worker', 'example.tasks:send_email', '--topic', 'emails',"
        " '--metrics-port', '9100']))\n",
        dsn,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        "pushpop: error: --metrics-port needs prometheus_client, which is not installed:"
        " pip install 'pushpop[metrics]'"
    ]


def test_without_the_extras_a_worker_handles_messages_and_imports_neither(dsn: str) -> None:
    done = without_extras(
        """
import threading
import pushpop

handled = []
with pushpop.Client() as client:
    client.push("jobs", json={"n": 1})
    worker = pushpop.Worker(client, "jobs", lambda msg: (handled.append(msg), worker.stop()))
    worker.run()
    assert len(handled) == 1 and client.find(handled[0].id).state == "completed"
    try:
        pushpop.Worker(client, "jobs", print, metrics_port=9100)
    except pushpop.Error as exc:
        print(exc)
loaded = [m for m in sys.modules if m.split(".")[0] in ("prometheus_client", "opentelemetry")]
print("loaded:", [m for m in loaded if sys.modules[m] is not None])
""",
        dsn,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "metrics_port needs prometheus_client, which is not installed:"
        " pip install 'pushpop[metrics]'",
        "loaded: []",
    ]
