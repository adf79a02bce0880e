-- wrk script for bench/run.py (run with -t1: all state is per wrk thread).
--
--   wrk ... -s bench/wrk.lua URL                   GET (headers from -H)
--   wrk ... -s bench/wrk.lua URL -- form BODY      POST BODY as a form
--                                                  (the password grant of /oauth/token)
--   wrk ... -s bench/wrk.lua URL -- tokens FILE    GET, cycling through the bearer
--                                                  tokens in FILE (one a line)
--   wrk ... -s bench/wrk.lua URL -- refresh FILE   POST the refresh grant, keeping
--                                                  the rotating chains started by
--                                                  the refresh tokens in FILE
--
-- Refresh chains: wrk's Lua API has no per-connection state, but it calls
-- response() for a connection before that connection's next request(). So the
-- live refresh tokens sit on one stack: request() pops one (each token is sent
-- exactly once), response() pushes the successor parsed from the JSON body.
-- With as many tokens as connections the stack never runs dry while every
-- answer is a 200; a connection usually gets back the token its own answer
-- carried, so in effect each connection rotates its own family. A failed
-- answer loses its chain; a request with no token left is sent with a bogus
-- one and fails, so it shows up in the errors. wrk builds one request in
-- init's state before the run to check it (script_verify_request): that one
-- is never sent, so run.py passes one spare token.
--
-- At the end it prints one line, "WRK_JSON {...}", with the raw counts and the
-- latency percentiles in microseconds, which run.py parses instead of wrk's
-- human-readable report.

local mode = "get"
local prepared = nil
local cycle = {}
local cycle_n = 0
local cycle_i = 0
local stack = {}
lost = 0 -- globals: done() reads them through thread:get
first_failure = ""
local threads = {}

local function read_lines(path)
  local lines = {}
  for line in io.lines(path) do
    if line ~= "" then
      lines[#lines + 1] = line
    end
  end
  return lines
end

local function with_authorization(token)
  local headers = {}
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  headers["Authorization"] = "Bearer " .. token
  return wrk.format(nil, nil, headers)
end

local function refresh_request(token)
  return wrk.format(nil, nil, nil, "grant_type=refresh_token&refresh_token=" .. token)
end

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  mode = args[1] or "get"
  if mode == "form" then
    wrk.method = "POST"
    wrk.body = args[2]
    wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  elseif mode == "tokens" then
    for _, token in ipairs(read_lines(args[2])) do
      cycle[#cycle + 1] = with_authorization(token)
    end
    cycle_n = #cycle
  elseif mode == "refresh" then
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
    stack = read_lines(args[2])
    response = refresh_response
  end
  prepared = wrk.format()
end

function request()
  if mode == "tokens" then
    cycle_i = cycle_i % cycle_n + 1
    return cycle[cycle_i]
  elseif mode == "refresh" then
    local token = table.remove(stack)
    return refresh_request(token or "brt_none-left")
  end
  return prepared
end

-- The response() of refresh mode, installed by init(): wrk parses answers only
-- when the script has a response(), so the other modes are left as they were.
function refresh_response(status, headers, body)
  local token = nil
  if status == 200 and body then
    token = string.match(body, '"refresh_token"%s*:%s*"(brt_[%w_%-]+)"')
  end
  if token then
    stack[#stack + 1] = token
  else
    lost = lost + 1
    if first_failure == "" then
      first_failure = tostring(status) .. " " .. string.sub(body or "", 1, 160)
    end
  end
end

function done(summary, latency, requests)
  local chains_lost = 0
  local failure = ""
  for _, thread in ipairs(threads) do
    chains_lost = chains_lost + (thread:get("lost") or 0)
    if failure == "" then
      failure = thread:get("first_failure") or ""
    end
  end
  -- JSON-safe: keep printable ASCII, drop quotes and backslashes
  failure = string.gsub(failure, '[^%w%s%p]', "?")
  failure = string.gsub(failure, '["\\]', "'")
  failure = string.gsub(failure, "%s", " ")
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"status_errors": %d, "timeouts": %d, "chains_lost": %d, "first_failure": "%s"}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout, chains_lost, failure))
end
