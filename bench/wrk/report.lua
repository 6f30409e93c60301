-- bench/wrk/report.lua — wrk's reporting side for make bench.
--
-- At the end of a run, prints one line "BENCH_JSON {...}" with requests/s and latency percentiles
-- (p50/p90/p99/p999 from wrk's own latency histogram, in ms) and the error counts; bench/benchlib.py
-- wrk-json picks it out of wrk's output.
--
-- Request hook for candidates: when WRK_REQUEST_SCRIPT names a Lua file, it is loaded first in
-- every wrk thread. It may define init(args), request(), response(status, headers, body) — e.g. to
-- build signed keytrustee requests. It must not define done(): this file's done() reports.

local hook = os.getenv("WRK_REQUEST_SCRIPT")
if hook ~= nil and hook ~= "" then
  dofile(hook)
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  local function ms(p) return latency:percentile(p) / 1000.0 end
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"seconds":%.3f,"ops_per_s":%.1f,"bytes":%d,' ..
    '"p50_ms":%.4f,"p90_ms":%.4f,"p99_ms":%.4f,"p999_ms":%.4f,"max_ms":%.4f,"mean_ms":%.4f,' ..
    '"errors":%d,"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,' ..
    '"errors_timeout":%d}\n',
    summary.requests, seconds, summary.requests / seconds, summary.bytes,
    ms(50), ms(90), ms(99), ms(99.9), latency.max / 1000.0, latency.mean / 1000.0,
    e.connect + e.read + e.write + e.status + e.timeout,
    e.connect, e.read, e.write, e.status, e.timeout))
end
