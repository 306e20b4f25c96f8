"""RabbitMQ through pika: a durable queue, persistent messages, confirms and manual acks.

The broker most applications would otherwise run beside PostgreSQL; every message here is as
durable as a committed row (the broker fsyncs before it confirms a persistent message).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pika  # type: ignore[import-not-found, import-untyped, unused-ignore]

from ..latency import Pickups
from .common import Config, Peer, sample_pickups, timed_threads

INACTIVITY = 0.05
"""How long a consumer waits for a delivery before looking whether the run is over."""


class Counter:
    """Messages acknowledged by all consumers; ``done`` is set when the last one is."""

    def __init__(self, total: int) -> None:
        self.total, self.count = total, 0
        self.lock, self.done = threading.Lock(), threading.Event()
        self.at = 0.0

    def add(self, n: int) -> None:
        """Counts n more acknowledgements."""
        with self.lock:
            self.count += n
            if self.count >= self.total and not self.done.is_set():
                self.at = time.perf_counter()
                self.done.set()


class RabbitMQ(Peer):
    """pika's BlockingConnection, one connection per producer or consumer thread."""

    name = "rabbitmq"
    label = "RabbitMQ (pika)"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.queue = f"pushpop_peers_{os.getpid()}"
        self._server = "?"

    def version(self) -> str:
        """The broker's and pika's versions."""
        return f"RabbitMQ {self._server}, pika {pika.__version__}"

    def notes(self) -> str:
        """The calls and settings."""
        c = self.config
        return (
            "A durable queue of its own (deleted afterwards), default exchange; one "
            f"`pika.BlockingConnection` per thread, {c.threads} producers and {c.threads} "
            "consumers. push: `basic_publish` of a persistent message (`delivery_mode=2`) on a "
            "channel in confirm mode (`confirm_delivery()`), so each call returns once the "
            f"broker confirmed it; batch: {c.batch} `basic_publish` calls between `tx_select` "
            "and `tx_commit`, AMQP's way to make a batch durable in one wait (confirm mode "
            "waits for each message in pika's blocking adapter). pop: `basic_qos(prefetch_count"
            "=1)`, `channel.consume(queue)` with manual acks, `basic_ack` of each message; "
            f"batch: `prefetch_count={c.batch}` and one `basic_ack(multiple=True)` per "
            f"{c.batch} messages. Pickup: a consumer (prefetch 1) waiting on the empty queue. "
            "The broker hands a message to a waiting consumer before its confirm reaches the "
            "publisher (timed from the confirmed `basic_publish` returning, the pickups came "
            "out below zero), so this row is timed from the `basic_publish` call's start: the "
            "trip to the broker and on to the consumer."
        )

    def _connect(self) -> Any:
        return pika.BlockingConnection(pika.URLParameters(self.config.amqp_url))

    def opened(self) -> contextlib.AbstractContextManager[None]:
        """Declares the queue; deletes it at exit."""

        @contextlib.contextmanager
        def run() -> Iterator[None]:
            with contextlib.closing(self._connect()) as conn:
                props = conn._impl.server_properties
                version = props.get("version", b"?")
                self._server = version.decode() if isinstance(version, bytes) else str(version)
                conn.channel().queue_declare(self.queue, durable=True)
            try:
                yield
            finally:
                with contextlib.closing(self._connect()) as conn:
                    conn.channel().queue_delete(self.queue)

        return run()

    def _purge(self) -> None:
        with contextlib.closing(self._connect()) as conn:
            conn.channel().queue_purge(self.queue)

    def _depth(self) -> int:
        with contextlib.closing(self._connect()) as conn:
            ok = conn.channel().queue_declare(self.queue, durable=True, passive=True)
            return int(ok.method.message_count)

    def _publish(self, channel: Any, body: bytes) -> None:
        channel.basic_publish(
            exchange="",
            routing_key=self.queue,
            body=body,
            properties=pika.BasicProperties(delivery_mode=2),
        )

    def _produce(self, batch: int) -> float:
        c = self.config
        self._purge()
        with contextlib.ExitStack() as stack:
            bodies: list[Callable[[], None]] = []
            for _ in range(c.threads):
                conn = stack.enter_context(contextlib.closing(self._connect()))
                channel = conn.channel()
                if batch == 1:
                    channel.confirm_delivery()
                else:
                    channel.tx_select()
                bodies.append(self._producer(channel, batch))
            seconds = timed_threads(bodies)
        if self._depth() != c.total:
            raise RuntimeError("the producers did not publish every message")
        return c.total / seconds

    def _producer(self, channel: Any, batch: int) -> Callable[[], None]:
        body, calls = self.config.payload, self.config.per_thread // batch

        def work() -> None:
            for _ in range(calls):
                for _ in range(batch):
                    self._publish(channel, body)
                if batch > 1:
                    channel.tx_commit()

        return work

    def _fill(self) -> None:
        self._purge()
        with contextlib.closing(self._connect()) as conn:
            channel = conn.channel()
            channel.tx_select()
            for i in range(self.config.total):
                self._publish(channel, self.config.payload)
                if i % 1000 == 999:
                    channel.tx_commit()
            channel.tx_commit()

    def _consume(self, prefetch: int) -> float:
        c = self.config
        self._fill()
        counter = Counter(c.total)
        with contextlib.ExitStack() as stack:
            bodies: list[Callable[[], None]] = []
            for _ in range(c.threads):
                conn = stack.enter_context(contextlib.closing(self._connect()))
                channel = conn.channel()
                channel.basic_qos(prefetch_count=prefetch)
                bodies.append(self._consumer(channel, prefetch, counter))
            gate = time.perf_counter()
            timed_threads(bodies)
        if self._depth():
            raise RuntimeError("the consumers left messages behind")
        return c.total / (counter.at - gate)

    def _consumer(self, channel: Any, prefetch: int, counter: Counter) -> Callable[[], None]:
        def work() -> None:
            unacked, last = 0, 0
            for method, _props, _body in channel.consume(self.queue, inactivity_timeout=INACTIVITY):
                if method is not None:
                    unacked, last = unacked + 1, method.delivery_tag
                if unacked and (unacked >= prefetch or method is None):
                    channel.basic_ack(delivery_tag=last, multiple=prefetch > 1)
                    counter.add(unacked)
                    unacked = 0
                if method is None and counter.done.is_set():
                    break
            channel.cancel()

        return work

    def push(self) -> float:
        """One confirmed persistent publish per call."""
        return self._produce(1)

    def push_batch(self) -> float:
        """A batch of persistent publishes per transaction."""
        return self._produce(self.config.batch)

    def pop(self) -> float:
        """Prefetch 1, one ack per message."""
        return self._consume(1)

    def pop_batch(self) -> float:
        """Prefetch of a batch, one multiple-ack per batch."""
        return self._consume(self.config.batch)

    def latency(self) -> list[float]:
        """A consumer waiting on the empty queue; confirmed publishes one at a time."""
        self._purge()
        pickups, stop, ready = Pickups(), threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def consume() -> None:
            try:
                with contextlib.closing(self._connect()) as conn:
                    channel = conn.channel()
                    channel.basic_qos(prefetch_count=1)
                    ready.set()
                    for method, _props, _body in channel.consume(
                        self.queue, inactivity_timeout=0.25
                    ):
                        if method is not None:
                            pickups()
                            channel.basic_ack(delivery_tag=method.delivery_tag)
                        elif stop.is_set():
                            break
                    channel.cancel()
            except BaseException as exc:
                errors.append(exc)
                ready.set()

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        try:
            ready.wait(10)
            if errors:
                raise errors[0]
            with contextlib.closing(self._connect()) as conn:
                channel = conn.channel()
                channel.confirm_delivery()
                body = self.config.payload
                return sample_pickups(
                    lambda: self._publish(channel, body),
                    pickups,
                    self.config.samples,
                    from_call=True,
                )
        finally:
            stop.set()
            thread.join()
