#!/usr/bin/env node
// Set the password of an umami user (default: admin), idempotently.
//
//   DATABASE_URL=postgresql://... UMAMI_ADMIN_PASSWORD=... node bin/set-admin-password.js
//
// Environment (no arguments are accepted, so the password never appears in argv):
//   DATABASE_URL          connection string (required)
//   UMAMI_ADMIN_PASSWORD  the new password (required, 8..72 bytes: bcrypt ignores more)
//   UMAMI_ADMIN_USER      the username (default: admin)
// Prints "OK: unchanged" when the stored bcrypt hash already matches (and has cost >= 10),
// otherwise stores a new bcrypt hash (cost 12) and prints "CHANGED: password set".
// Exits 1 on a usage error or a missing user, 2 when the database cannot be used.
// The password is never printed.
'use strict';

const path = require('path');

// pg and bcryptjs come from the bundle's own node_modules (one level up from bin/).
const bundleRoot = path.resolve(__dirname, '..');
const load = name => require(require.resolve(name, { paths: [bundleRoot] }));
const { Client } = load('pg');
const bcrypt = load('bcryptjs');

const BCRYPT_COST = 12;
const MIN_COST = 10;

function fail(message, code = 1) {
  process.stderr.write(`ERROR: ${message}\n`);
  process.exit(code);
}

async function main() {
  if (process.argv.length > 2) {
    fail('no arguments are accepted; use UMAMI_ADMIN_PASSWORD and UMAMI_ADMIN_USER');
  }

  const databaseUrl = process.env.DATABASE_URL;
  const password = process.env.UMAMI_ADMIN_PASSWORD;
  const username = process.env.UMAMI_ADMIN_USER || 'admin';

  if (!databaseUrl) fail('DATABASE_URL is not set');
  if (!password) fail('UMAMI_ADMIN_PASSWORD is not set');
  if (password.length < 8) fail('UMAMI_ADMIN_PASSWORD must be at least 8 characters');
  if (Buffer.byteLength(password, 'utf8') > 72) {
    fail('UMAMI_ADMIN_PASSWORD is longer than 72 bytes; bcrypt would silently truncate it');
  }

  const client = new Client({
    connectionString: databaseUrl,
    connectionTimeoutMillis: 10000,
    application_name: 'umami-set-admin-password',
  });

  try {
    await client.connect();
  } catch (e) {
    fail(`cannot connect to the database: ${e.message}`, 2);
  }

  try {
    let result;
    try {
      result = await client.query(
        'SELECT user_id, password FROM "user" WHERE username = $1 AND deleted_at IS NULL',
        [username],
      );
    } catch (e) {
      fail(`cannot read the user table (migrations applied?): ${e.message}`, 2);
    }

    if (result.rowCount === 0) {
      fail(`user "${username}" does not exist`);
    }

    const { user_id: userId, password: stored } = result.rows[0];

    let matches = false;
    try {
      matches = bcrypt.getRounds(stored) >= MIN_COST && bcrypt.compareSync(password, stored);
    } catch (e) {
      matches = false; // not a bcrypt hash: replace it
    }

    if (matches) {
      process.stdout.write('OK: unchanged\n');
      return;
    }

    const hash = bcrypt.hashSync(password, BCRYPT_COST);
    try {
      await client.query(
        'UPDATE "user" SET password = $1, updated_at = now() WHERE user_id = $2',
        [hash, userId],
      );
    } catch (e) {
      fail(`cannot update the password: ${e.message}`, 2);
    }
    process.stdout.write('CHANGED: password set\n');
  } finally {
    await client.end().catch(() => {});
  }
}

main().catch(e => fail(e.message, 2));
