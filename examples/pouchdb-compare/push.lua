-- wrk script: every request pushes `batch` new objects.
-- Arguments (after `--`): kind ("ours" or "pouch"), an id prefix unique to the run (20 hex
-- digits), and the batch size. Ids are prefix .. thread number (4 hex) .. counter (8 hex):
-- 32 hex digits like persistence.js's, unique across threads, connections and runs.
-- ours:  POST /taskChanges       [{"id":...,"title":...,"done":false}, ...]
-- pouch: POST /bench/_bulk_docs  {"docs":[{"_id":...,"title":...,"done":false}, ...]}

local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  kind = args[1]
  prefix = args[2]
  batch = tonumber(args[3] or "50")
  if kind ~= "ours" and kind ~= "pouch" then
    error("push.lua: kind must be ours or pouch, not " .. tostring(kind))
  end
  key = (kind == "pouch") and "_id" or "id"
  headers = { ["Content-Type"] = "application/json" }
  counter = 0
end

function request()
  local items = {}
  for i = 1, batch do
    counter = counter + 1
    local id = string.format("%s%04X%08X", prefix, tid, counter)
    items[i] = string.format('{"%s":"%s","title":"Task %s","done":false}', key, id, id)
  end
  local body = table.concat(items, ",")
  if kind == "pouch" then
    body = '{"docs":[' .. body .. ']}'
  else
    body = "[" .. body .. "]"
  end
  return wrk.format("POST", nil, headers, body)
end
