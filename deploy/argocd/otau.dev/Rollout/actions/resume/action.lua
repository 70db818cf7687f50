-- Argo CD action "resume": the one-shot otau.dev/resume annotation; lifts a pause by
-- annotation and accepts the failures of an automatic pause so far (not spec.paused: true).
local os = require("os")

-- A fresh nonce per action: the operator acts once per value (status.actedOn).
local function nonce()
  return "argocd-" .. os.date("!%Y%m%dT%H%M%SZ")
end

if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["otau.dev/resume"] = nonce()
return obj
