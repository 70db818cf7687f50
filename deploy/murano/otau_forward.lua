-- otau_forward.lua: forwards Murano device2 `data_in` events to the otau-operator's push
-- receiver (POST /hooks/device2?connector=<product id>), signed as exosite-platform.md §6.3:
-- X-Otau-Signature: sha256=<lowercase hex of HMAC-SHA256(key, raw body)>.
--
-- Plain Lua 5.1 (Murano's dialect): no `bit` library, no `require`. Paste it at the top of the
-- connector's device2 event handler (or the handler of an application subscribed to the
-- connector) and call `otau_forward(event)` before the handler's own return. See docs/push.md.
--
-- Only the values the operator reads (`otau_in`, `config_otau`) are forwarded, so a body stays
-- within the receiver's 260 KiB bound whatever else a device writes; an event without them is
-- not sent. The receiver refuses events without a `timestamp` or more than 5 minutes away from
-- its clock (exosite-platform.md §6.3): an event without one is stamped with this handler's
-- clock.

-- Configuration ---------------------------------------------------------------------------
local OTAU = {
  -- The operator's push receiver, reachable from the Exosite cloud (HTTPS in production).
  url = "https://otau-operator.example.com/hooks/device2",
  -- The connector's product id (the IoTConnector's spec.productId).
  connector = "REPLACE-WITH-PRODUCT-ID",
  -- The shared key: the same bytes as the IoTConnector's webhook Secret key (hmacKey).
  key = "REPLACE-WITH-THE-WEBHOOK-KEY",
  -- Event types forwarded (the operator uses data_in; others are accepted and ignored).
  types = { data_in = true },
  -- The aliases the operator reads; other values are left out.
  aliases = { otau_in = true, config_otau = true },
}

-- 32-bit arithmetic without a bit library --------------------------------------------------
local TWO32 = 4294967296
local AND4, XOR4 = {}, {}
for a = 0, 15 do
  AND4[a], XOR4[a] = {}, {}
  for b = 0, 15 do
    local x, y, r_and, r_xor, weight = a, b, 0, 0, 1
    for _ = 1, 4 do
      local bx, by = x % 2, y % 2
      if bx == 1 and by == 1 then r_and = r_and + weight end
      if bx ~= by then r_xor = r_xor + weight end
      x, y, weight = (x - bx) / 2, (y - by) / 2, weight * 2
    end
    AND4[a][b], XOR4[a][b] = r_and, r_xor
  end
end

local function nibblewise(table4, a, b)
  local result, weight = 0, 1
  for _ = 1, 8 do
    local na, nb = a % 16, b % 16
    result = result + table4[na][nb] * weight
    a, b, weight = (a - na) / 16, (b - nb) / 16, weight * 16
  end
  return result
end
local function band(a, b) return nibblewise(AND4, a, b) end
local function bxor(a, b) return nibblewise(XOR4, a, b) end
local function bnot(a) return TWO32 - 1 - a end
local function shr(a, n) return math.floor(a / 2 ^ n) end
local function rotr(a, n)
  local low = a % 2 ^ n
  return (a - low) / 2 ^ n + low * 2 ^ (32 - n)
end

-- SHA-256 (FIPS 180-4). The constants are computed from the primes, as the standard defines
-- them: fractional parts of square roots (H) and cube roots (K), 32 bits each.
local function primes(n)
  local list, candidate = {}, 2
  while #list < n do
    local prime = true
    for _, p in ipairs(list) do
      if p * p > candidate then break end
      if candidate % p == 0 then prime = false; break end
    end
    if prime then list[#list + 1] = candidate end
    candidate = candidate + 1
  end
  return list
end
local function frac32(x) return math.floor((x - math.floor(x)) * TWO32) end
local H0, K = {}, {}
for i, p in ipairs(primes(64)) do
  if i <= 8 then H0[i] = frac32(math.sqrt(p)) end
  K[i] = frac32(p ^ (1 / 3))
end

local function be32(s, i)
  local a, b, c, d = s:byte(i, i + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end
local function to_be32(x)
  local d = x % 256; x = (x - d) / 256
  local c = x % 256; x = (x - c) / 256
  local b = x % 256; x = (x - b) / 256
  return string.char(x, b, c, d)
end

local function sha256(message)
  local bits = #message * 8
  local padded = message .. "\128" .. string.rep("\0", (55 - #message) % 64)
    .. to_be32(math.floor(bits / TWO32)) .. to_be32(bits % TWO32)
  local h = { H0[1], H0[2], H0[3], H0[4], H0[5], H0[6], H0[7], H0[8] }
  local w = {}
  for chunk = 1, #padded, 64 do
    for t = 1, 16 do w[t] = be32(padded, chunk + (t - 1) * 4) end
    for t = 17, 64 do
      local s0 = bxor(bxor(rotr(w[t - 15], 7), rotr(w[t - 15], 18)), shr(w[t - 15], 3))
      local s1 = bxor(bxor(rotr(w[t - 2], 17), rotr(w[t - 2], 19)), shr(w[t - 2], 10))
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) % TWO32
    end
    local a, b, c, d, e, f, g, hh = h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]
    for t = 1, 64 do
      local S1 = bxor(bxor(rotr(e, 6), rotr(e, 11)), rotr(e, 25))
      local ch = bxor(band(e, f), band(bnot(e), g))
      local t1 = (hh + S1 + ch + K[t] + w[t]) % TWO32
      local S0 = bxor(bxor(rotr(a, 2), rotr(a, 13)), rotr(a, 22))
      local maj = bxor(bxor(band(a, b), band(a, c)), band(b, c))
      local t2 = (S0 + maj) % TWO32
      hh, g, f, e, d, c, b, a = g, f, e, (d + t1) % TWO32, c, b, a, (t1 + t2) % TWO32
    end
    h[1], h[2], h[3], h[4] = (h[1] + a) % TWO32, (h[2] + b) % TWO32, (h[3] + c) % TWO32, (h[4] + d) % TWO32
    h[5], h[6], h[7], h[8] = (h[5] + e) % TWO32, (h[6] + f) % TWO32, (h[7] + g) % TWO32, (h[8] + hh) % TWO32
  end
  local out = {}
  for i = 1, 8 do out[i] = to_be32(h[i]) end
  return table.concat(out)
end

local function xor_pad(key, byte)
  local out = {}
  for i = 1, 64 do out[i] = string.char(bxor(key:byte(i), byte)) end
  return table.concat(out)
end

-- HMAC-SHA256 (RFC 2104) as lowercase hex.
function otau_hmac_sha256_hex(key, message)
  if #key > 64 then key = sha256(key) end
  key = key .. string.rep("\0", 64 - #key)
  local digest = sha256(xor_pad(key, 92) .. sha256(xor_pad(key, 54) .. message))
  return (digest:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- JSON ------------------------------------------------------------------------------------
-- Murano's `to_json` when present; otherwise a small encoder (strings, numbers, booleans,
-- arrays, objects), enough for a device2 event. The signature covers the bytes sent, so the
-- key order does not matter.
local function encode(value)
  local kind = type(value)
  if kind == "string" then
    return '"' .. value:gsub('[%c"\\]', function(c)
      local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
      return named[c] or string.format("\\u%04x", c:byte())
    end) .. '"'
  elseif kind == "number" then
    if value == math.floor(value) and math.abs(value) < 2 ^ 53 then
      return string.format("%d", value)
    end
    return string.format("%.17g", value)
  elseif kind == "boolean" then
    return tostring(value)
  elseif kind == "table" then
    local n = #value
    if n > 0 or next(value) == nil then
      local items = {}
      for i = 1, n do items[i] = encode(value[i]) end
      return "[" .. table.concat(items, ",") .. "]"
    end
    local keys = {}
    for k in pairs(value) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local items = {}
    for i, k in ipairs(keys) do items[i] = encode(k) .. ":" .. encode(value[k]) end
    return "{" .. table.concat(items, ",") .. "}"
  end
  return "null"
end

function otau_encode_json(value)
  if type(to_json) == "function" then return to_json(value) end
  return encode(value)
end

-- Forwarding --------------------------------------------------------------------------------
-- A copy of `event` whose payload keeps only the forwarded aliases (entries left empty are
-- dropped), stamped with this handler's clock (µs) when it has no timestamp; nil when no
-- entry carries a forwarded alias.
function otau_trim(event)
  local payload = {}
  for _, entry in ipairs(event.payload or {}) do
    local values, any = {}, false
    for alias, value in pairs(entry.values or {}) do
      if OTAU.aliases[alias] then
        values[alias] = value
        any = true
      end
    end
    if any then payload[#payload + 1] = { values = values, timestamp = entry.timestamp } end
  end
  if #payload == 0 then return nil end
  local copy = {}
  for k, v in pairs(event) do copy[k] = v end
  copy.payload = payload
  if copy.timestamp == nil and os and os.time then copy.timestamp = os.time() * 1000000 end
  return copy
end

-- Posts `event` to the operator when its type is forwarded and it carries a value the operator
-- reads. Returns the HTTP status (or nil). The operator answers 204 when it took the event,
-- 401 for an unknown connector or a wrong key (alike), 400 for an event it cannot use (one
-- more than 5 minutes away from its clock among them) and 413 for a body over its bound.
-- Failures are logged and never stop the handler: the operator's poll repairs lost events.
function otau_forward(event)
  if type(event) ~= "table" or not OTAU.types[event.type] then return nil end
  event = otau_trim(event)
  if event == nil then return nil end
  local body = otau_encode_json(event)
  local response = Http.post({
    url = OTAU.url .. "?connector=" .. OTAU.connector,
    body = body,
    headers = {
      ["Content-Type"] = "application/json",
      ["X-Otau-Signature"] = "sha256=" .. otau_hmac_sha256_hex(OTAU.key, body),
    },
    conn_timeout = 3000,
    recv_timeout = 5000,
  })
  local status = response and response.status_code
  if status ~= 204 then
    print("otau_forward: the operator answered " .. tostring(status) .. " for " .. tostring(event.identity))
  end
  return status
end
