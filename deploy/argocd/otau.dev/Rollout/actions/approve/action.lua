-- Argo CD action "approve": approves the wave waiting for approval (the one after
-- status.currentWave) with the one-shot annotation otau.dev/approve: <wave>:<nonce>.
local os = require("os")

-- A fresh nonce per action: the operator acts once per value (status.actedOn).
local function nonce()
  return "argocd-" .. os.date("!%Y%m%dT%H%M%SZ")
end

if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local current = 0
if obj.status ~= nil and obj.status.currentWave ~= nil then
  current = obj.status.currentWave
end
-- No string.format: Argo CD opens only the base, table and os libraries for custom actions.
obj.metadata.annotations["otau.dev/approve"] = tostring(current + 1) .. ":" .. nonce()
return obj
