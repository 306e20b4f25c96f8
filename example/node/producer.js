// Pushes each JSON argument to a topic and prints one id a line.
//   DATABASE_URL=postgresql://... node producer.js TOPIC '{"to": "ada@example.com"}' ...
'use strict';
const { Client } = require('pg');
const { push } = require('./pushpop');

async function main([topic, ...values]) {
  const db = new Client({ connectionString: process.env.DATABASE_URL });
  await db.connect();
  try {
    for (const value of values) console.log(await push(db, topic, JSON.parse(value)));
  } finally {
    await db.end();
  }
}

main(process.argv.slice(2)).catch((err) => {
  console.error(`producer: ${err.message} (SQLSTATE ${err.code})`);
  process.exit(1);
});
