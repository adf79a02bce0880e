-- wrk script for bench/run.py.
--
--   wrk ... -s bench/wrk.lua URL                 GET (headers from -H)
--   wrk ... -s bench/wrk.lua URL -- form BODY    POST BODY as a form
--                                                (the password grant of /oauth/token)
--
-- At the end it prints one line, "WRK_JSON {...}", with the raw counts and the
-- latency percentiles in microseconds, which run.py parses instead of wrk's
-- human-readable report.

local prepared = nil

function init(args)
  if args[1] == "form" then
    wrk.method = "POST"
    wrk.body = args[2]
    wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  end
  prepared = wrk.format()
end

function request()
  return prepared
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"status_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
