-- Argo CD action "abort": the one-shot otau.dev/abort annotation. Terminal: nothing more is
-- written to devices; nothing is rolled back.
local os = require("os")

-- A fresh nonce per action: the operator acts once per value (status.actedOn).
local function nonce()
  return "argocd-" .. os.date("!%Y%m%dT%H%M%SZ")
end

if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["otau.dev/abort"] = nonce()
return obj
