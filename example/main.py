"""The classic pushpop example: push three messages, then pop until the wanted one turns up.

The others are deferred for a few seconds, as if left for someone who wants them, and the
wanted one is completed. Needs ``DATABASE_URL`` (``make demo`` finds or starts a database).
"""

from __future__ import annotations

import sys
import time

import pushpop

TOPIC = "example.animals"
MESSAGES = [b"birds are the best", b"cats are the best", b"dogs are the best"]
WANTED = b"dogs are the best"
GIVE_UP_AFTER = 10.0  # seconds without the wanted message before the example fails


def main() -> int:
    """Runs the example; exit status 0 once the wanted message is completed."""
    with pushpop.Client() as client:  # DATABASE_URL, else libpq's defaults
        client.migrate()
        # Start from an empty topic, so running the example again gives the same result.
        client.purge(TOPIC)

        for payload in MESSAGES:
            msg_id = client.push(TOPIC, payload)
            print(f"pushed {payload.decode()!r} as {msg_id}")

        deadline = time.monotonic() + GIVE_UP_AFTER
        while True:
            msg = client.pop(TOPIC, lease=30)
            if msg is None:
                # Nothing ready (another consumer holds it?): wait a little and try again.
                if time.monotonic() > deadline:
                    print("gave up: the wanted message never came", file=sys.stderr)
                    return 1
                time.sleep(0.5)
                continue

            if msg.payload == WANTED:
                msg.complete()
                print(f"got our message: {msg.payload.decode()!r} ({msg.id}), completed it")
                break

            # Not ours: put it back for five seconds and let a bird or cat person have it.
            msg.defer(5, reason="not a dog")
            print(f"got another message: {msg.payload.decode()!r} ({msg.id}), deferred it")

        for s in client.stats():
            if s.topic == TOPIC:
                print(
                    f"topic {TOPIC!r}: {s.completed} completed, {s.scheduled} deferred, "
                    f"{s.ready} ready, {s.pending} pending"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
