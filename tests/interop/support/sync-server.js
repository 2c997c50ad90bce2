// Starts the sync-server binary under test on a free port and stops it gracefully.
//
// Binary: $SYNC_SERVER_BIN (a relative path is taken from tests/interop), by default the debug build
// ../../target/debug/sync-server. Store: a fresh SQLite file in a temporary directory, or
// $SYNC_INTEROP_DB_URL when set (the caller then guarantees a fresh, empty database).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const interopDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export function serverBinary() {
  return path.resolve(interopDir, process.env.SYNC_SERVER_BIN || '../../target/debug/sync-server');
}

/**
 * Spawns the server with `--bind 127.0.0.1:0` (and `args`, such as `--config FILE`) and waits for its "listening on" log line (JSON logs on
 * stderr) to learn the port. Resolves with {baseUrl, stop}; stop() sends SIGTERM and resolves with
 * the exit {code, signal}.
 */
export async function startServer({ startTimeoutMs = 30000, stopTimeoutMs = 15000, args = [] } = {}) {
  const bin = serverBinary();
  if (!fs.existsSync(bin)) {
    throw new Error(`sync-server binary not found at ${bin}: build it with \`cargo build -p sync-server\` or set SYNC_SERVER_BIN`);
  }
  let tmpDir = null;
  let db = process.env.SYNC_INTEROP_DB_URL;
  if (!db) {
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sync-interop-'));
    db = path.join(tmpDir, 'sync.db');
  }

  const child = spawn(bin, ['--bind', '127.0.0.1:0', '--db', db, '--log-format', 'json', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  // Keep the log for error messages; keep reading stderr for the whole run so the server never
  // blocks on a full pipe.
  const log = [];
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));

  const addr = await new Promise((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => fail(new Error(`no "listening on" log line within ${startTimeoutMs} ms`)), startTimeoutMs);
    function fail(err) {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${err.message}\nserver log:\n${log.join('\n')}`));
    }
    const onEarlyExit = (code, signal) => fail(new Error(`server exited early (code ${code}, signal ${signal})`));
    child.on('error', fail);
    child.on('exit', onEarlyExit);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf('\n')) !== -1) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        log.push(line);
        let entry;
        try {
          entry = JSON.parse(line);
        } catch {
          continue; // not a JSON log line
        }
        const fields = entry && entry.fields;
        if (fields && typeof fields.message === 'string' && fields.message.startsWith('listening on') && fields.addr) {
          clearTimeout(timer);
          child.removeListener('exit', onEarlyExit);
          resolve(fields.addr);
        }
      }
    });
  });

  async function stop() {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    let timer;
    const result = await Promise.race([
      exited,
      new Promise((resolve) => {
        timer = setTimeout(() => {
          child.kill('SIGKILL');
          resolve({ code: null, signal: 'SIGKILL', timedOut: true });
        }, stopTimeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
    return { ...result, log };
  }

  return { baseUrl: `http://${addr}`, stop, log };
}
