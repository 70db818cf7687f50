-- Argo CD health of an otau.dev IoTConnector (Lua 5.1), from its conditions (docs/architecture.md §8):
--   Ready=True                                          -> Healthy
--   Stalled=True, or Ready=False with a failure reason  -> Degraded
--     (failure reasons: CredentialsRejected ProductNotFound ConfigurationInvalid ResourcesMissing; they need a person to act)
--   anything else (no status yet, an unobserved generation, waiting, retrying) -> Progressing
local failure_reasons = {CredentialsRejected = true, ProductNotFound = true, ConfigurationInvalid = true, ResourcesMissing = true}
local hs = {}

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local reason = c.reason or "Unknown"
  if c.message ~= nil and c.message ~= "" then
    return reason .. ": " .. c.message
  end
  return reason
end

local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to check the IoTConnector"
  return hs
end

local ready = condition(status, "Ready")
local stalled = condition(status, "Stalled")
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Connected")
  return hs
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end
if ready ~= nil and ready.status == "False" and failure_reasons[ready.reason] then
  hs.status = "Degraded"
  hs.message = describe(ready, "Failed")
  return hs
end
hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the operator")
return hs
