// A to-do list with persistence.js: its memory store is saved in localStorage after every change,
// so the list works offline and survives a reload; the `Todo` entity syncs with the sync server at
// /todoChanges (the page is served by that server, so requests carry its cookie). A sync runs on
// the Sync button, after every local change, and whenever a long-poll says something changed.
//
// persistence.js keeps one shared session and tracks "changed since the last sync" with the wall
// clock, so every operation (an edit, a sync) runs alone, one after the other, through `serial`:
// an edit made while a sync is between its pull and its end would otherwise be taken as synced.
(function () {
  'use strict';

  var COOKIE = 'sync_token';
  var ENTITY_PATH = '/todoChanges';
  var SYNC_TIMEOUT_MS = 15000;
  var LONG_POLL_SECS = 25;
  var RETRY_MIN_MS = 500;
  var RETRY_MAX_MS = 5000;

  var $ = function (id) { return document.getElementById(id); };
  var Todo = persistence.define('Todo', { text: 'TEXT', done: 'BOOL' });
  Todo.enableSync(ENTITY_PATH);

  // ---------------------------------------------------------------------------------------------
  // Login: the token goes into the cookie the server is configured to read ([auth] cookie).

  function readCookie(name) {
    var match = document.cookie.split('; ').filter(function (c) { return c.indexOf(name + '=') === 0; })[0];
    return match ? match.slice(name.length + 1) : null;
  }

  /** The claims of a JWT, or null; shown only (the server checks the signature). */
  function claimsOf(token) {
    try {
      var part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(part + '==='.slice((part.length + 3) % 4)));
    } catch (e) {
      return null;
    }
  }

  function setCookie(token, claims) {
    var maxAge = Math.max(0, Math.floor(claims.exp - Date.now() / 1000));
    // Set by the page, so not HttpOnly; SameSite=Strict keeps other sites' requests without it.
    document.cookie = COOKIE + '=' + token + '; Path=/; Max-Age=' + maxAge + '; SameSite=Strict' +
      (location.protocol === 'https:' ? '; Secure' : '');
  }

  function clearCookie() {
    document.cookie = COOKIE + '=; Path=/; Max-Age=0; SameSite=Strict';
  }

  function showLogin(message) {
    $('app').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
  }

  $('login-form').addEventListener('submit', function (event) {
    event.preventDefault();
    var token = $('token').value.trim();
    var claims = claimsOf(token);
    if (!claims || typeof claims.sub !== 'string' || typeof claims.exp !== 'number') {
      return showLogin('This is not a token with a subject (sub) and an expiry (exp).');
    }
    if (claims.exp * 1000 <= Date.now()) return showLogin('This token has expired.');
    setCookie(token, claims);
    // A fresh page for this user: the store is opened once per page, under the user's own key.
    location.reload();
  });

  $('logout').addEventListener('click', function () {
    clearCookie();
    location.reload();
  });

  // ---------------------------------------------------------------------------------------------
  // One operation at a time.

  var queue = Promise.resolve();
  function serial(operation) {
    var run = queue.then(operation);
    queue = run.catch(function () {});
    return run;
  }

  function flushAndSave() {
    return new Promise(function (resolve) {
      persistence.flush(function () { persistence.saveToLocalStorage(resolve); });
    });
  }

  /** Reverts the session to what localStorage holds: the state after the last completed operation. */
  function restoreSaved() {
    return new Promise(function (resolve) {
      persistence.reset(function () { persistence.loadFromLocalStorage(resolve); });
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Sync.

  // persistence.sync.js's postJSON never calls back when a push fails, so a sync would never end;
  // this one reports the failure to the sync in progress.
  var failSync = null;
  persistence.sync.postJSON = function (uri, data, callback) {
    var xhr = new XMLHttpRequest();
    xhr.open('POST', uri, true);
    xhr.setRequestHeader('Content-Type', 'application/json');
    xhr.onreadystatechange = function () {
      if (xhr.readyState !== 4) return;
      if (xhr.status === 200) callback(JSON.parse(xhr.responseText));
      else if (failSync) failSync(xhr);
    };
    xhr.send(data);
  };

  var needsSync = true; // a change waits to be pushed, or the last sync failed
  var lastSynced = null;

  function httpError(xhr) {
    var error = new Error(xhr.status ? 'HTTP ' + xhr.status : 'the server cannot be reached');
    error.status = xhr.status;
    return error;
  }

  function syncOnce() {
    return new Promise(function (resolve, reject) {
      var done = false;
      var finish = function (fn, value) {
        if (done) return;
        done = true;
        failSync = null;
        clearTimeout(timer);
        fn(value);
      };
      var timer = setTimeout(function () { finish(reject, new Error('the sync took too long')); }, SYNC_TIMEOUT_MS);
      failSync = function (xhr) { finish(reject, httpError(xhr)); };
      // Both devices edited the same field: the server's value wins (as `todo sync` does by default).
      Todo.syncAll(persistence.sync.preferRemoteConflictHandler,
        function () { finish(resolve); },
        function (xhr) { finish(reject, httpError(xhr)); });
    }).then(function () {
      return new Promise(function (resolve) { persistence.saveToLocalStorage(resolve); });
    }, function (error) {
      // A sync that failed midway may have applied part of the pull in memory (and dropped the
      // removal records it was pushing): go back to the saved state, and pull again next time.
      return restoreSaved().then(function () { throw error; });
    }).then(function () {
      // persistence.js compares _lastChange with the end of the sync in milliseconds: an edit in
      // the same millisecond would count as synced.
      return new Promise(function (resolve) { setTimeout(resolve, 2); });
    });
  }

  function sync() {
    return serial(function () {
      setStatus('syncing');
      return syncOnce().then(function () {
        needsSync = false;
        lastSynced = new Date();
        return render();
      }, function (error) {
        needsSync = true;
        if (error.status === 401) {
          clearCookie();
          showLogin('The server did not accept your token (expired?). Log in again.');
        }
        return render(error);
      });
    });
  }

  function serverDate() {
    return new Promise(function (resolve) {
      persistence.sync.Sync.findBy('entity', 'Todo', function (s) { resolve(s ? s.serverDate || 0 : 0); });
    });
  }

  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  /** Waits for changes on the server (a long-poll) and syncs when there are some, for ever. */
  function watch() {
    var retry = RETRY_MIN_MS;
    var again = function () { return watch_(); };
    function watch_() {
      var step = needsSync ? sync().then(function () {
        if (needsSync) throw new Error('sync failed');
      }) : serverDate().then(function (since) {
        var controller = new AbortController();
        var timer = setTimeout(function () { controller.abort(); }, (LONG_POLL_SECS + 10) * 1000);
        return fetch(ENTITY_PATH + '?since=' + since + '&wait=' + LONG_POLL_SECS + '&limit=1',
          { cache: 'no-store', signal: controller.signal })
          .then(function (answer) {
            clearTimeout(timer);
            if (answer.status === 401) {
              needsSync = true; // the sync shows the login form
              return;
            }
            if (!answer.ok) throw new Error('HTTP ' + answer.status);
            return answer.json().then(function (body) {
              // Changes to pull, or the server is back after a failure: sync (and say so).
              if (body.updates.length > 0 || state === 'offline' || state === 'error') needsSync = true;
            });
          }, function (error) {
            clearTimeout(timer);
            setStatus('offline');
            throw error;
          });
      });
      return step.then(function () {
        retry = RETRY_MIN_MS;
        if (!$('app').hidden) return again();
      }, function () {
        if ($('app').hidden) return;
        var wait = retry;
        retry = Math.min(retry * 2, RETRY_MAX_MS);
        return sleep(wait).then(again);
      });
    }
    return watch_();
  }

  // ---------------------------------------------------------------------------------------------
  // Local changes: each is flushed and saved, then pushed by a sync.

  function change(apply) {
    return serial(function () {
      return Promise.resolve(apply()).then(flushAndSave).then(function () {
        needsSync = true;
        return render();
      });
    }).then(sync);
  }

  function findTodo(id) {
    return new Promise(function (resolve) { Todo.load(id, resolve); });
  }

  $('add-form').addEventListener('submit', function (event) {
    event.preventDefault();
    var text = $('new-text').value.trim();
    if (!text) return;
    $('new-text').value = '';
    change(function () { persistence.add(new Todo({ text: text, done: false })); });
  });

  $('sync').addEventListener('click', function () { sync(); });

  $('todos').addEventListener('click', function (event) {
    var item = event.target.closest('li');
    if (!item) return;
    var id = item.dataset.id;
    if (event.target.classList.contains('toggle')) {
      change(function () { return findTodo(id).then(function (t) { if (t) t.done = !t.done; }); });
    } else if (event.target.classList.contains('remove')) {
      change(function () { return findTodo(id).then(function (t) { if (t) persistence.remove(t); }); });
    } else if (event.target.classList.contains('edit')) {
      startEdit(item);
    }
  });

  var editing = false; // while a to-do's text is edited, the list is not redrawn under it

  function startEdit(item) {
    editing = true;
    var span = item.querySelector('.text');
    var input = document.createElement('input');
    input.className = 'edit-text';
    input.value = span.textContent;
    span.replaceWith(input);
    input.focus();
    input.select(); // typing replaces the text
    var finished = false;
    var finish = function (save) {
      if (finished) return;
      finished = true;
      editing = false;
      var text = input.value.trim();
      if (save && text && text !== span.textContent) {
        change(function () {
          return findTodo(item.dataset.id).then(function (t) { if (t) t.text = text; });
        });
      } else {
        render();
      }
    };
    input.addEventListener('keydown', function (e) {
      if (e.key === 'Enter') finish(true);
      if (e.key === 'Escape') finish(false);
    });
    input.addEventListener('blur', function () { finish(true); });
  }

  // ---------------------------------------------------------------------------------------------
  // Rendering.

  var state = 'starting';
  function setStatus(next, pending) {
    state = next;
    var status = $('status');
    status.dataset.state = next;
    if (pending !== undefined) status.dataset.pending = String(pending);
    var n = Number(status.dataset.pending);
    var kept = n === 1 ? '1 change kept on this device' : n + ' changes kept on this device';
    status.textContent = {
      starting: 'Starting…',
      syncing: 'Syncing…',
      synced: 'Synced' + (lastSynced ? ' at ' + lastSynced.toLocaleTimeString() : ''),
      offline: 'Offline: ' + kept,
      unsynced: kept + ', not synced yet',
    }[next] || next;
  }

  /** Local changes not yet pushed: edited or new to-dos, and removals. */
  function pendingChanges() {
    return new Promise(function (resolve) {
      persistence.sync.Sync.findBy('entity', 'Todo', function (s) {
        var since = s ? s.localDate || 0 : 0;
        Todo.all().filter('_lastChange', '>', since).count(function (changed) {
          persistence.sync.RemovedObject.all().filter('entity', '=', 'Todo').count(function (removed) {
            resolve(changed + removed);
          });
        });
      });
    });
  }

  function render(error) {
    return new Promise(function (resolve) {
      Todo.all().order('text', true).list(function (todos) {
        if (!editing) draw(todos);
        pendingChanges().then(function (pending) {
          var next = error ? (error.status ? 'error' : 'offline') : (needsSync ? 'unsynced' : 'synced');
          if (state === 'syncing' && !error && needsSync) next = 'syncing';
          setStatus(next, pending);
          if (error && error.status) $('status').textContent = 'Sync failed: ' + error.message;
          resolve();
        });
      });
    });
  }

  function draw(todos) {
    var list = $('todos');
    list.textContent = '';
    todos.forEach(function (t) {
      var li = document.createElement('li');
      li.dataset.id = t.id;
      if (t.done) li.className = 'done';
      var box = document.createElement('input');
      box.type = 'checkbox';
      box.className = 'toggle';
      box.checked = !!t.done;
      box.title = 'Done';
      var text = document.createElement('span');
      text.className = 'text';
      text.textContent = t.text;
      var edit = document.createElement('button');
      edit.type = 'button';
      edit.className = 'edit';
      edit.textContent = 'Edit';
      var remove = document.createElement('button');
      remove.type = 'button';
      remove.className = 'remove';
      remove.textContent = 'Remove';
      li.append(box, text, edit, remove);
      list.append(li);
    });
    $('empty').hidden = todos.length > 0;
  }

  // ---------------------------------------------------------------------------------------------
  // Start: a logged-in page opens the user's store, shows what it holds, and syncs.

  var token = readCookie(COOKIE);
  var claims = token && claimsOf(token);
  if (!claims || typeof claims.sub !== 'string') {
    showLogin();
    return;
  }
  $('user').textContent = claims.sub;
  $('logout').hidden = false;
  $('app').hidden = false;
  // Each user's to-dos are kept under a key of their own, so that users of one browser never mix.
  persistence.store.memory.config(persistence, 'todo:' + claims.sub);
  window.addEventListener('online', function () { sync(); });
  serial(function () {
    return new Promise(function (resolve) { persistence.loadFromLocalStorage(resolve); }).then(function () {
      return render();
    });
  }).then(watch);
})();
