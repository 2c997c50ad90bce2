// The fixes the published persistence.js client (npm `persistencejs@0.3.0`) needs to sync with
// this server, as text replacements on its sources: the one list both the web app's build
// (build.mjs, which writes static/vendor/) and the interoperability test (tests/interop) apply.
// Each fix quotes the 0.3.0 sources exactly and must match exactly once, so that another version
// of the package fails loudly instead of being patched in the wrong place.

/** The client's browser sources, in load order: the core, the memory store, the sync plugin. */
export const SOURCE_FILES = ['persistence.js', 'persistence.store.memory.js', 'persistence.sync.js'];

/**
 * Fixes for known bugs of the published client, applied to its source text. A deployment of
 * persistence.js with this server needs the same fixes; nothing else of the client is changed.
 * Each `find` is quoted exactly from the 0.3.0 sources and must occur exactly once.
 */
export const CLIENT_FIXES = [
  {
    file: 'persistence.sync.js',
    name: 'remove the dead "ensure IDs var chars" block (upstream issue #146)',
    // Bug: this block sits between "group the removed ids" and the loop over the groups, and reads
    // `group`, which is only a parameter of the callback below it. Every sync throws
    // "ReferenceError: group is not defined" there, so no sync can ever complete. `idVals` is never
    // used, so deleting the block changes nothing else: it is the smallest fix.
    find:
      '          /* ensure IDs var chars */\n' +
      '          var idVals = new Array();\n' +
      '          for(var id=0;id<group.length;id++){\n' +
      '            idVals.push( persistence.typeMapper.entityIdToDbId(group[id]));\n' +
      '          }\n',
    replace: '',
  },
  {
    file: 'persistence.sync.js',
    name: 'keep the result of existingItems.concat',
    // Bug: Array.prototype.concat returns a new array, and the result is discarded, so
    // `existingItems` stays empty. Step 1 of the merge (compare remote objects with their local
    // versions, detect conflicts, apply remote changes) then never runs: conflicts go undetected and
    // remote changes to objects a device already has are dropped. Assigning the result is the
    // smallest change that makes the code do what it was written to do.
    find: '          existingItems.concat(groupOfExistingItems);\n',
    replace: '          existingItems = existingItems.concat(groupOfExistingItems);\n',
  },
  {
    file: 'persistence.store.memory.js',
    name: 'flush marks flushed objects as no longer new',
    // Bug: the memory store's flush clears `_dirtyProperties` of every tracked object but never
    // clears `_new` (the SQL stores do, once the INSERT is done). Two consequences:
    //  - the sync plugin's flush hook treats `_new` as dirty, so every flush re-stamps
    //    `_lastChange = Date.now()` on every object ever created or pulled: each sync then sees all
    //    of them as locally changed (pushes them all again, and reports false conflicts);
    //  - persistence.remove (lib/persistence.js, `persistence.remove`, lines ~301-312) only untracks
    //    an object that is still `_new` (it was never stored, so there is nothing to delete); only
    //    a stored object is put in `objectsRemoved`, which the sync plugin turns into a removal to
    //    push. With `_new` never cleared, no local removal is ever synced.
    // Clearing `_new` at the exact point where the flush has "stored" the object (its dirty
    // properties are cleared) is the smallest fix; removed objects are dropped just above it.
    find: '              trackedObjects[id]._dirtyProperties = {};\n',
    replace:
      '              trackedObjects[id]._dirtyProperties = {};\n' +
      '              trackedObjects[id]._new = false;\n',
  },
  {
    file: 'persistence.store.memory.js',
    name: 'DbQueryCollection.destroyAll removes the matching objects',
    // Bug: destroyAll clones the store's collection of the entity (makeLocalClone) and calls
    // LocalQueryCollection.destroyAll on the clone, which only empties the clone's item list: nothing
    // is deleted. The sync plugin uses destroyAll twice: (a) to apply removals pulled from the server
    // (`Entity.all(session).filter('id', 'in', group).destroyAll(next)`), which therefore never take
    // effect, and (b) to forget the local removal records it has just pushed
    // (`removedObjColl.destroyAll(...)`), which therefore are pushed again on every sync.
    //
    // Fix: delete each matching object from the store, i.e. from the entity's collection in
    // `allObjects` and from the tracked objects (the same two places the memory store's own
    // persistence.add puts it), WITHOUT going through persistence.remove. persistence.remove
    // records a removal in `objectsRemoved`, which the sync plugin's flush hook turns into a
    // `_SyncRemovedObject` that the next sync pushes: every removal pulled from the server would be
    // echoed back as a new local removal (a fresh tombstone that every other device then downloads
    // again). A removal pulled from the server is not a local change, so it must not be recorded as
    // one. (The SQL store's destroyAll does record them; that echo is tolerated by the protocol,
    // but it is a wasted round for every device, not something to copy.) For (b) the difference
    // does not matter: removal records are not synced entities.
    find: '    coll.destroyAll(null, callback);\n',
    replace:
      '    coll.list(null, function(results) {\n' +
      '      results.forEach(function(obj) {\n' +
      '        allObjects[obj._type].remove(obj);\n' +
      '        delete persistence.trackedObjects[obj.id];\n' +
      '      });\n' +
      '      callback();\n' +
      '    });\n',
  },
  {
    file: 'persistence.store.memory.js',
    name: 'loadFromLocalStorage keeps the saved _lastChange of synced objects',
    // Bug: persistence.load adds every saved object as a new one and sets its fields, so the sync
    // plugin's flush hook (which stamps `_lastChange = Date.now()` on every new or dirty object of
    // a synced entity) re-stamps all of them as the load flushes. After a page reload every object
    // then looks changed since the last sync: the next sync pushes them all again, and any remote
    // edit of one of them is reported as a conflict. The saved `_lastChange` (it is a field, so
    // the dump holds it) is put back once the load is done, without marking anything dirty; the
    // sync state (`_Sync`) and the pending removals (`_SyncRemovedObject`) load as saved.
    find:
      '    if(dump) {\n' +
      '      this.loadFromJson(dump, callback);\n',
    replace:
      '    if(dump) {\n' +
      '      var session = this;\n' +
      '      this.loadFromJson(dump, function() {\n' +
      '        var saved = JSON.parse(dump);\n' +
      '        for (var entityName in saved) {\n' +
      '          if (saved.hasOwnProperty(entityName)) {\n' +
      '            saved[entityName].forEach(function(rec) {\n' +
      '              var obj = session.trackedObjects[rec.id];\n' +
      "              if (obj && rec.hasOwnProperty('_lastChange')) obj._data._lastChange = rec._lastChange;\n" +
      '            });\n' +
      '          }\n' +
      '        }\n' +
      '        callback && callback();\n' +
      '      });\n',
  },
];


/** Counts the non-overlapping occurrences of `needle` in `haystack`. */
export function countOccurrences(haystack, needle) {
  let count = 0;
  for (let at = haystack.indexOf(needle); at !== -1; at = haystack.indexOf(needle, at + needle.length)) {
    count++;
  }
  return count;
}

/**
 * Applies CLIENT_FIXES to `sources` ({file: text}, for SOURCE_FILES). Throws unless every fix
 * matches exactly once. Returns the patched sources and, per fix, the number of matches found.
 */
export function applyFixes(sources) {
  const patched = { ...sources };
  const matches = CLIENT_FIXES.map((fix) => {
    const count = countOccurrences(patched[fix.file], fix.find);
    if (count !== 1) {
      throw new Error(`client fix "${fix.name}" must match exactly once in ${fix.file}, matched ${count} times`);
    }
    // split/join rather than String.replace: the replacement text must not be read as a pattern.
    patched[fix.file] = patched[fix.file].split(fix.find).join(fix.replace);
    return { name: fix.name, file: fix.file, count };
  });
  return { sources: patched, matches };
}
