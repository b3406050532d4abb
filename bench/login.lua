-- wrk script: POST /trpc/auth.login with the benchmark account's (correct) password, and a
-- count of the responses by status printed at the end as `status NNN: COUNT` lines.
-- BENCH_EMAIL / BENCH_PASSWORD override the account (a wrong password locks it after 5 tries).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"email":"%s","password":"%s"}',
    os.getenv("BENCH_EMAIL") or "bench@example.com",
    os.getenv("BENCH_PASSWORD") or "correct horse battery")

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    statuses = {}
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local total = {}
    for _, thread in ipairs(threads) do
        for status, count in pairs(thread:get("statuses")) do
            total[status] = (total[status] or 0) + count
        end
    end
    for status, count in pairs(total) do
        io.write(string.format("status %d: %d\n", status, count))
    end
end
