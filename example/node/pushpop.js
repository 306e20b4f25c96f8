// pushpop from Node.js: each function is one call of pushpop's SQL API (docs/clients.md).
'use strict';

// Payloads are bytes (bytea): JSON goes as its UTF-8 text.
async function push(db, topic, value, { delaySeconds = 0, dedupKey = null, headers = null } = {}) {
  const { rows } = await db.query(
    'SELECT pushpop.push($1, $2, delay => make_interval(secs => $3), dedup_key => $4,' +
      ' headers => $5) AS id',
    [topic, Buffer.from(JSON.stringify(value)), delaySeconds, dedupKey, headers],
  );
  return rows[0].id;
}

// The next ready message of the topic, leased for leaseSeconds, or null.
async function pop(db, topic, leaseSeconds = 300) {
  const { rows } = await db.query(
    'SELECT id, lease, attempts, max_attempts, payload, headers' +
      ' FROM pushpop.pop($1, lease_for => make_interval(secs => $2))',
    [topic, leaseSeconds],
  );
  return rows.length ? rows[0] : null;
}

// Each acknowledgement answers true, or false when the lease is no longer ours: it lapsed
// and the message went back to the queue, maybe to another consumer. Nothing changed then.
async function complete(db, msg) {
  const { rows } = await db.query('SELECT pushpop.complete($1, $2) AS done', [msg.id, msg.lease]);
  return rows[0].done;
}

async function defer(db, msg, delaySeconds, reason) {
  const { rows } = await db.query(
    'SELECT pushpop.defer($1, $2, make_interval(secs => $3), $4) AS done',
    [msg.id, msg.lease, delaySeconds, reason],
  );
  return rows[0].done;
}

// Sleeping until a push, on a connection of its own that LISTENs on channel pushpop.
class Waker {
  constructor(listener, topics) {
    this.topics = new Set(topics);
    this.notified = false;
    this.wakeUp = () => {};
    listener.on('notification', (n) => {
      if (n.channel === 'pushpop' && this.topics.has(n.payload)) {
        this.notified = true;
        this.wakeUp();
      }
    });
  }

  // Resolves true as soon as a notification came since the last reset, else false after ms.
  wait(ms) {
    if (this.notified) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(this.notified), ms);
      this.wakeUp = () => {
        clearTimeout(timer);
        resolve(true);
      };
    });
  }

  reset() {
    this.notified = false;
    this.wakeUp = () => {};
  }
}

// The wake-up protocol's steps 2 and 3 after an empty pop: registers, waits about 100 ms and
// returns so the caller pops once more ("recheck"), then, if that pop is empty too, sleeps
// until a notification or pollMs. Either way the caller starts over with a pop.
async function askForWakeUp(db, waker, consumer, topics) {
  waker.reset();
  await db.query('SELECT pushpop.wait_for_push($1, $2::text[])', [consumer, topics]);
  await waker.wait(100);
}

module.exports = { push, pop, complete, defer, Waker, askForWakeUp };
