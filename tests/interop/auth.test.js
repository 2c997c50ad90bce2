// The published persistence.js client through authentication, as a web app uses it: its login put
// a token in a cookie (persistence.sync.js cannot add headers), the browser sends that cookie with
// every request and the page's origin with every POST. Each user's devices converge in the user's
// own partition, and nothing crosses to another user; a page of another site cannot write with the
// user's cookie.
//
// Run from tests/interop: `npm ci && node --test` (after `cargo build -p sync-server`).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { Device } from './support/persistence-client.js';
import { startServer } from './support/sync-server.js';

const FIELDS = { name: 'TEXT', done: 'BOOL', priority: 'INT' };
const SECRET = crypto.randomBytes(32).toString('hex');
const COOKIE = 'sync_token';

let server;
let configDir;

before(async () => {
  configDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sync-interop-auth-'));
  const config = path.join(configDir, 'auth.toml');
  fs.writeFileSync(config, `[auth]\ncookie = "${COOKIE}"\n\n[auth.jwt]\nalgorithms = ["HS256"]\nsecret = "${SECRET}"\n`);
  server = await startServer({ args: ['--config', config] });
});

after(async () => {
  const { code, signal, timedOut, log } = await server.stop();
  fs.rmSync(configDir, { recursive: true, force: true });
  assert.ok(!timedOut, 'server did not stop within the timeout after SIGTERM');
  assert.equal(signal, null, `server was killed by ${signal}`);
  assert.equal(code, 0, `server exited with code ${code} after SIGTERM; log:\n${log.slice(-20).join('\n')}`);
});

const b64url = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** An HS256 token of `sub`, as the app's login would get it from its identity provider. */
function token(sub) {
  const head = b64url({ alg: 'HS256', typ: 'JWT' });
  const body = b64url({ sub, exp: Math.floor(Date.now() / 1000) + 600 });
  const signature = crypto.createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${signature}`;
}

/** A device of `user`: the app in a page of the server's own origin, logged in. */
function deviceOf(user, label, entity) {
  return new Device(label, server.baseUrl, { [entity]: FIELDS }, { cookie: `${COOKIE}=${token(user)}`, origin: server.baseUrl });
}

const names = async (device, entity) => Array.from(await device.list(entity)).map((o) => o.name).sort();
const tick = (ms = 5) => new Promise((resolve) => setTimeout(resolve, ms));

test('through a cookie, each user syncs a partition of their own', async () => {
  const E = 'Note';
  const alicePhone = deviceOf('alice', 'alice-phone', E);
  const aliceLaptop = deviceOf('alice', 'alice-laptop', E);
  const bob = deviceOf('bob', 'bob', E);

  alicePhone.create(E, { name: 'alice 1', done: false, priority: 1 });
  alicePhone.create(E, { name: 'alice 2', done: false, priority: 2 });
  await alicePhone.flush();
  bob.create(E, { name: 'bob 1', done: true, priority: 0 });
  await bob.flush();

  await alicePhone.sync(E);
  await bob.sync(E);
  await aliceLaptop.sync(E);
  assert.deepEqual(await names(aliceLaptop, E), ['alice 1', 'alice 2'], "alice's second device gets her notes only");
  assert.deepEqual(await names(bob, E), ['bob 1'], "bob gets none of alice's");

  // An edit on one of alice's devices reaches the other, and still not bob.
  await tick();
  const [first] = Array.from(await aliceLaptop.list(E)).filter((o) => o.name === 'alice 1');
  first.name = 'alice 1, edited';
  await aliceLaptop.flush();
  await aliceLaptop.sync(E);
  await alicePhone.sync(E);
  await bob.sync(E);
  assert.deepEqual(await names(alicePhone, E), ['alice 1, edited', 'alice 2']);
  assert.deepEqual(await names(bob, E), ['bob 1']);
});

test('without the cookie the server answers 401, and another site cannot write with it', async () => {
  const url = `${server.baseUrl}/noteChanges`;
  const anonymous = await fetch(`${url}?since=0`);
  assert.equal(anonymous.status, 401);
  assert.match(anonymous.headers.get('www-authenticate'), /^Bearer /);

  const cookie = `${COOKIE}=${token('mallory-target')}`;
  const forged = await fetch(url, {
    method: 'POST',
    headers: { Cookie: cookie, Origin: 'https://evil.example', 'Content-Type': 'text/plain' },
    body: '[{"id":"forged","name":"x"}]',
  });
  assert.equal(forged.status, 403);
  assert.equal((await forged.json()).error, 'forbidden_origin');
  const mine = await fetch(`${url}?since=0`, { headers: { Cookie: cookie } });
  assert.deepEqual((await mine.json()).updates, [], 'the forged push applied nothing');
});
