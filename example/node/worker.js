// A worker: pops messages of a topic and completes them, or defers them when the handler
// fails; sleeps until a push with LISTEN when the topic is empty. One JSON line per event.
//   DATABASE_URL=postgresql://... node worker.js TOPIC [--until-idle] [--poll-ms N] [--step]
// --until-idle: stop at the first empty pop instead of sleeping.
// --step: wait for a line on standard input before each acknowledgement (for the tests).
'use strict';
const crypto = require('node:crypto');
const readline = require('node:readline');
const { Client } = require('pg');
const pushpop = require('./pushpop');

const RETRY_SECONDS = 3600; // a failed message comes back an hour later

function say(event, fields = {}) {
  console.log(JSON.stringify({ event, ...fields }));
}

// The handler: a payload {"fail": true} fails on its first attempt.
function handle(msg) {
  const value = JSON.parse(msg.payload.toString('utf8'));
  if (value.fail && msg.attempts === 1) throw new Error('failing the first attempt, as asked');
  return value;
}

async function main(argv) {
  const topic = argv[0];
  const untilIdle = argv.includes('--until-idle');
  const step = argv.includes('--step');
  const pollAt = argv.indexOf('--poll-ms');
  const pollMs = pollAt >= 0 ? Number(argv[pollAt + 1]) : 5000;
  const lines = step ? readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]() : null;

  const db = new Client({ connectionString: process.env.DATABASE_URL });
  const listener = new Client({ connectionString: process.env.DATABASE_URL });
  await db.connect();
  await listener.connect();
  await listener.query('LISTEN pushpop'); // step 1, once
  const waker = new pushpop.Waker(listener, [topic]);
  const consumer = crypto.randomUUID(); // the same for every wait_for_push of this worker
  let stopping = false;
  process.on('SIGTERM', () => {
    stopping = true;
    waker.wakeUp();
  });

  let asked = false;
  while (!stopping) {
    const msg = await pushpop.pop(db, topic);
    if (msg === null) {
      if (untilIdle) break;
      if (!asked) {
        // Step 2: register, wait about 100 ms, and pop once more.
        await pushpop.askForWakeUp(db, waker, consumer, [topic]);
        asked = !waker.notified; // a notification ended the registration: start over
        continue;
      }
      // Step 3: sleep until a notification or the poll interval, then start over.
      say('sleeping');
      await waker.wait(pollMs);
      asked = false;
      continue;
    }
    asked = false;
    say('popped', { id: msg.id, attempts: msg.attempts });
    let done;
    let outcome;
    try {
      const value = handle(msg);
      if (lines) await lines.next();
      done = await pushpop.complete(db, msg);
      outcome = 'completed';
      if (done) say(outcome, { id: msg.id, value });
    } catch (err) {
      if (err.code) throw err; // the database's error, not the handler's
      if (lines) await lines.next();
      done = await pushpop.defer(db, msg, RETRY_SECONDS, err.message);
      outcome = 'deferred';
      if (done) say(outcome, { id: msg.id, reason: err.message });
    }
    // false: the lease lapsed and the message went back to the queue; whoever holds it now
    // acknowledges it. Nothing to undo here, and nothing to retry.
    if (!done) say('lease lost', { id: msg.id, outcome });
  }
  await listener.end();
  await db.end();
  say('stopped');
}

main(process.argv.slice(2)).catch((err) => {
  console.error(`worker: ${err.message} (SQLSTATE ${err.code})`);
  process.exit(1);
});
