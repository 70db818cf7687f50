-- Checks otau_forward.lua with plain Lua 5.1: `lua5.1 deploy/murano/test_otau_forward.lua`
-- (from the repository root). Exits non-zero on the first failure.
dofile("deploy/murano/otau_forward.lua")

local failures = 0
local function check(name, got, want)
  if got ~= want then
    failures = failures + 1
    print("FAIL " .. name .. ": got " .. tostring(got) .. ", want " .. tostring(want))
  else
    print("ok   " .. name)
  end
end

-- RFC 4231 test case 2.
check("rfc4231 case 2", otau_hmac_sha256_hex("Jefe", "what do ya want for nothing?"),
  "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
-- RFC 4231 test case 6: a 131-byte key (hashed first).
check("rfc4231 case 6", otau_hmac_sha256_hex(string.rep("\170", 131),
  "Test Using Larger Than Block-Size Key - Hash Key First"),
  "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
-- The contract's vector (exosite-platform.md §6.3): secret test-secret, the 248-byte body.
local body = '{"type":"data_in","identity":"00AB01","timestamp":1700000000000000,"ip":"203.0.113.7","connection_id":"c-1","payload":[{"values":{"otau_in":"{\\"version\\":\\"1.0.2\\",\\"status\\":\\"INSTALLED_VERSION\\",\\"message\\":\\"\\"}"},"timestamp":1700000000000000}]}'
check("body length", #body, 248)
check("contract vector", otau_hmac_sha256_hex("test-secret", body),
  "6913c02cc36bc794757a06b94572a0ade43f92f4bb63b4cb89f1a854e1f0e9ac")

-- Forwarding: the request Http.post receives (a stand-in that records it).
local sent
Http = { post = function(request) sent = request; return { status_code = 204 } end }
local status = otau_forward({ type = "data_in", identity = "00AB01", timestamp = 1700000000000000,
  payload = { { values = { otau_in = '{"version":"1","status":"INIT"}' }, timestamp = 1700000000000000 } } })
check("answer", status, 204)
check("url", sent.url, "https://otau-operator.example.com/hooks/device2?connector=REPLACE-WITH-PRODUCT-ID")
check("signature", sent.headers["X-Otau-Signature"],
  "sha256=" .. otau_hmac_sha256_hex("REPLACE-WITH-THE-WEBHOOK-KEY", sent.body))
check("body", sent.body,
  '{"identity":"00AB01","payload":[{"timestamp":1700000000000000,"values":{"otau_in":"{\\"version\\":\\"1\\",\\"status\\":\\"INIT\\"}"}}],"timestamp":1700000000000000,"type":"data_in"}')
sent = nil
check("other types are not sent", otau_forward({ type = "connect", identity = "x" }), nil)
check("nothing posted", sent, nil)

-- Only the aliases the operator reads are forwarded; an event without them is not sent.
otau_forward({ type = "data_in", identity = "00AB02", timestamp = 1700000000000000,
  payload = { { values = { otau_in = "r", big = string.rep("x", 100000) }, timestamp = 1700000000000000 },
              { values = { other = "y" }, timestamp = 1700000000000001 } } })
check("other aliases left out", sent.body,
  '{"identity":"00AB02","payload":[{"timestamp":1700000000000000,"values":{"otau_in":"r"}}],"timestamp":1700000000000000,"type":"data_in"}')
sent = nil
check("no value the operator reads: not sent",
  otau_forward({ type = "data_in", identity = "00AB03", timestamp = 1, payload = { { values = { other = "y" }, timestamp = 1 } } }), nil)
check("nothing posted for it", sent, nil)

-- An event without a timestamp is stamped with the handler's clock, in µs.
local before = os.time() * 1000000
otau_forward({ type = "data_in", identity = "00AB04",
  payload = { { values = { config_otau = "{}" }, timestamp = 1700000000000000 } } })
local stamped = tonumber(sent.body:match('"timestamp":(%d+),"type"'))
check("stamped with the clock", stamped ~= nil and stamped >= before and stamped <= os.time() * 1000000, true)

if failures > 0 then os.exit(1) end
print("all passed")
