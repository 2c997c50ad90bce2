// Loads the published persistence.js client (npm `persistencejs@0.3.0`) as a browser would, once
// per simulated device, and gives the tests a promise-based handle on it.
//
// The client is browser code: it expects a global `window` and `XMLHttpRequest`, and it keeps all
// its state in globals. So each device gets its own `vm` context (its own globals, its own
// `persistence` object, its own in-memory store and its own XMLHttpRequest), and several devices can
// sync against one server in one process.
//
// The sources are evaluated from the installed package, with only the fixes of CLIENT_FIXES
// (examples/webapp/persistence-fixes.js, shared with the web app example) applied to their text in
// memory; each fix must match exactly once, so that a different package version fails loudly
// instead of being patched in the wrong place.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';

// The fixes are the web app example's: one list for every deployment of the client.
import { CLIENT_FIXES, SOURCE_FILES, applyFixes, countOccurrences } from '../../../examples/webapp/persistence-fixes.js';

export { CLIENT_FIXES, countOccurrences };

const here = path.dirname(fileURLToPath(import.meta.url));
const libDir = path.resolve(here, '..', 'node_modules', 'persistencejs', 'lib');

// Load order as in persistence.js's own browser sync test (test/browser/test.sync.html): the core,
// the store, the sync plugin (SOURCE_FILES); the store is configured afterwards.

/**
 * Reads the client sources and applies CLIENT_FIXES. Throws unless every fix matches exactly once.
 * Returns the patched sources ({file: text}) and, per fix, the number of matches found.
 */
export function loadPatchedSources() {
  const sources = {};
  for (const file of SOURCE_FILES) {
    sources[file] = fs.readFileSync(path.join(libDir, file), 'utf8');
  }
  return applyFixes(sources);
}

// The sources are read and patched once; every device evaluates the same text.
let patched;
function patchedSources() {
  patched ??= loadPatchedSources();
  return patched.sources;
}

/**
 * Makes an XMLHttpRequest class over Node's http module, with just what persistence.sync.js uses:
 * open, setRequestHeader, send, readyState (4 when done), status, responseText, onreadystatechange.
 * Like a browser it is asynchronous: the client sets onreadystatechange after calling send().
 * A network failure ends with readyState 4 and status 0, as in a browser.
 *
 * `device.exchanges` records every request and answer so that tests can check what the client
 * actually sent. Exceptions thrown by the client's callback are reported to `device.fail`.
 */
function makeXMLHttpRequest(device, browser) {
  return class XMLHttpRequest {
    constructor() {
      this.readyState = 0;
      this.status = 0;
      this.responseText = '';
      this.onreadystatechange = null;
      this._headers = {};
    }

    open(method, url) {
      this._method = method;
      this._url = url;
      this.readyState = 1;
    }

    setRequestHeader(name, value) {
      this._headers[name] = value;
    }

    send(body) {
      const exchange = { method: this._method, url: this._url, body: body ?? null, status: null, response: null };
      device.exchanges.push(exchange);
      const finish = (status, text) => {
        exchange.status = status;
        exchange.response = text;
        this.status = status;
        this.responseText = text;
        this.readyState = 4;
        try {
          if (typeof this.onreadystatechange === 'function') this.onreadystatechange();
        } catch (err) {
          device.fail(err);
        }
      };
      // What a browser adds to a page's request: its cookie for the server, and on a POST the
      // page's origin.
      const headers = { ...this._headers };
      if (browser.cookie) headers.Cookie = browser.cookie;
      if (browser.origin && this._method === 'POST') headers.Origin = browser.origin;
      const req = http.request(this._url, { method: this._method, headers }, (res) => {
        res.setEncoding('utf8');
        let text = '';
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () => finish(res.statusCode, text));
        res.on('error', () => finish(0, ''));
      });
      req.on('error', () => finish(0, ''));
      if (body !== undefined && body !== null) req.write(body);
      req.end();
    }
  };
}

/**
 * One simulated device: an independent persistence.js instance with the in-memory store and the
 * sync plugin, whose entities sync with `baseUrl`.
 *
 * `entities` maps an entity name to its persistence.js field spec; the entity syncs with
 * `<baseUrl>/<name with a lower-case first letter>Changes` (the protocol's convention).
 */
export class Device {
  /**
   * `browser` describes the page the app runs in, for a server with cookie authentication:
   * `cookie` (the Cookie header a browser would send) and `origin` (the page's origin).
   */
  constructor(label, baseUrl, entities, browser = {}) {
    this.label = label;
    this.exchanges = [];
    this._pending = null; // the reject function of the operation in progress, if any
    this._errors = [];

    const quietConsole = {
      // persistence.sync.js logs every pushed object with console.log; keep test output readable.
      log: process.env.INTEROP_DEBUG ? (...args) => console.log(`[${label}]`, ...args) : () => {},
      warn: (...args) => console.warn(`[${label}]`, ...args),
      error: (...args) => console.error(`[${label}]`, ...args),
    };
    // Errors thrown inside the client's asynchronous callbacks must fail the operation in progress
    // rather than crash the test process or leave a promise pending forever.
    const guardedSetTimeout = (fn, ms, ...args) =>
      setTimeout(() => {
        try {
          fn(...args);
        } catch (err) {
          this.fail(err);
        }
      }, ms);

    const context = vm.createContext({
      window: {},
      XMLHttpRequest: makeXMLHttpRequest(this, browser),
      console: quietConsole,
      setTimeout: guardedSetTimeout,
      clearTimeout,
    });
    const sources = patchedSources();
    for (const file of Object.keys(sources)) {
      vm.runInContext(sources[file], context, { filename: path.join(libDir, file) });
    }
    const persistence = context.window.persistence;
    persistence.store.memory.config(persistence);

    this.context = context;
    this.persistence = persistence;
    this.entities = {};
    for (const [name, fields] of Object.entries(entities)) {
      const Entity = persistence.define(name, fields);
      Entity.enableSync(`${baseUrl}/${name[0].toLowerCase()}${name.slice(1)}Changes`);
      this.entities[name] = Entity;
    }
  }

  /** Reports an error thrown inside the client: the operation in progress fails with it. */
  fail(err) {
    this._errors.push(err);
    if (this._pending) this._pending(err);
  }

  /** Runs `start(resolve)` as one client operation, failing on client errors and on a timeout. */
  _operation(what, start, timeoutMs = 15000) {
    return new Promise((resolve, reject) => {
      if (this._errors.length) return reject(this._errors[0]);
      const timer = setTimeout(
        () => reject(new Error(`${this.label}: ${what} did not finish within ${timeoutMs} ms (last exchange: ${JSON.stringify(this.exchanges.at(-1))})`)),
        timeoutMs,
      );
      const done = (fn) => (value) => {
        clearTimeout(timer);
        this._pending = null;
        fn(value);
      };
      this._pending = done(reject);
      try {
        start(done(resolve), done(reject));
      } catch (err) {
        done(reject)(err);
      }
    });
  }

  /** Creates and adds a new object; the caller flushes. */
  create(entityName, values) {
    const obj = new this.entities[entityName](values);
    this.persistence.add(obj);
    return obj;
  }

  flush() {
    return this._operation('flush', (resolve) => this.persistence.flush(() => resolve()));
  }

  /** All live objects of the entity, as the client's own query returns them. */
  list(entityName) {
    return this._operation('list', (resolve) => this.entities[entityName].all().list((items) => resolve(items)));
  }

  /**
   * Entity.syncAll(conflictHandler, callback, errorCallback). Resolves with what happened: the
   * conflicts handed to the handler, and the exchanges (GET, POST) of this sync.
   * `handler` is 'preferLocal', 'preferRemote' or 'none' (no conflict expected: one fails the sync).
   */
  sync(entityName, handler = 'none') {
    const before = this.exchanges.length;
    const conflicts = [];
    const stock = {
      preferLocal: this.persistence.sync.preferLocalConflictHandler,
      preferRemote: this.persistence.sync.preferRemoteConflictHandler,
    }[handler];
    return this._operation(`sync of ${entityName}`, (resolve, reject) => {
      const conflictHandler = (list, updatesToPush, callback) => {
        // Record what the client considered a conflict (copied out of the device's realm).
        for (const c of list) {
          conflicts.push({ id: c.local.id, properties: [...c.properties], remote: { ...c.remote } });
        }
        if (!stock) return reject(new Error(`${this.label}: unexpected conflicts ${JSON.stringify(conflicts)}`));
        return stock(list, updatesToPush, callback);
      };
      this.entities[entityName].syncAll(
        conflictHandler,
        () => resolve({ conflicts, exchanges: this.exchanges.slice(before) }),
        (xhr) => reject(new Error(`${this.label}: sync failed: HTTP ${xhr.status} ${xhr.responseText}`)),
      );
    });
  }

  /** persistence.reset: the device forgets every local object and its sync state. */
  reset() {
    return this._operation('reset', (resolve) => this.persistence.reset(() => resolve()));
  }

  /** Marks an object removed; the caller flushes. */
  remove(obj) {
    this.persistence.remove(obj);
  }
}
