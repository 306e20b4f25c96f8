#!/usr/bin/env bash
# A pushpop consumer with psql alone: pops a message of TOPIC, runs COMMAND with the payload
# on its standard input, completes the message when COMMAND succeeds and defers it (retry
# later) when it fails. One line per message on standard output.
#
#   DATABASE_URL=postgresql://... example/psql/worker.sh TOPIC COMMAND [ARG...]
#
# UNTIL_IDLE=1 stops at the first empty pop. Otherwise an empty topic is polled every
# POLL_SECONDS (default 5): psql cannot sleep until a NOTIFY, a driver can (example/node).
# LEASE (default '5 minutes') and RETRY_DELAY (default '1 minute') are PostgreSQL intervals.
set -euo pipefail

here=$(dirname "$0")
topic=${1:?usage: worker.sh TOPIC COMMAND [ARG...]}
shift
[ $# -gt 0 ] || { echo "usage: worker.sh TOPIC COMMAND [ARG...]" >&2; exit 2; }

sql() { psql "${DATABASE_URL:-}" -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }

while :; do
    row=$(sql -v topic="$topic" -v lease_for="${LEASE:-5 minutes}" -f "$here/pop.sql")
    if [ -z "$row" ]; then
        [ -n "${UNTIL_IDLE:-}" ] && exit 0
        sleep "${POLL_SECONDS:-5}"
        continue
    fi
    IFS='|' read -r id lease attempts max_attempts payload <<<"$row"
    if base64 -d <<<"$payload" | "$@"; then
        outcome=completed
        done=$(sql -v id="$id" -v lease="$lease" -f "$here/complete.sql")
    else
        outcome="deferred after exit status $?"
        [ "$attempts" -ge "$max_attempts" ] && outcome="discarded on its last attempt"
        done=$(sql -v id="$id" -v lease="$lease" -v attempts="$attempts" \
            -v max_attempts="$max_attempts" -v delay="${RETRY_DELAY:-1 minute}" \
            -v reason="$* failed" -f "$here/defer.sql")
    fi
    # f: the lease lapsed and the message went back to the queue; whoever holds it now
    # acknowledges it. Nothing to undo.
    if [ "$done" = t ]; then echo "$id $outcome"; else echo "$id lease lost"; fi
done
