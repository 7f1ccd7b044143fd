-- wrk script: POST the benchmark's chat body (read from the file named by $BENCH_BODY_FILE)
-- with the Content-Type and User-Agent that batchgen sends (it sends no Accept header).
local f = assert(io.open(assert(os.getenv("BENCH_BODY_FILE"), "BENCH_BODY_FILE not set"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "batchgen/0.1.0"

-- No response() callback: calling Lua per response would slow wrk down; wrk counts
-- non-2xx answers itself ("Non-2xx or 3xx responses").
