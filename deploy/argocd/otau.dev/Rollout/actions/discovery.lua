-- Argo CD resource actions of an otau.dev Rollout (Lua 5.1). Each action writes the one-shot
-- annotation a person would write with kubectl (docs/rollouts.md, "Control"): Git keeps the
-- spec, so self-heal never reverts an action, and each nonce acts once.
local actions = {}
actions["pause"] = {["disabled"] = true, ["iconClass"] = "fa fa-fw fa-pause-circle"}
actions["resume"] = {["disabled"] = true, ["iconClass"] = "fa fa-fw fa-play-circle"}
actions["approve"] = {["disabled"] = true, ["iconClass"] = "fa fa-fw fa-check-circle"}
actions["abort"] = {["disabled"] = true, ["iconClass"] = "fa fa-fw fa-times-circle"}

local status = obj.status or {}
local spec = obj.spec or {}
local paused_reason = nil
local finished = spec.abort == true or status.phase == "Aborted" or status.phase == "Complete"
for _, c in ipairs(status.conditions or {}) do
  if c.type == "Paused" and c.status == "True" then
    paused_reason = c.reason
  end
  if (c.type == "Complete" and c.status == "True") or (c.type == "Stalled" and c.status == "True" and c.reason == "Aborted") then
    finished = true
  end
end

if not finished then
  actions["abort"]["disabled"] = false
  -- Pausing again while held by the user changes nothing; pausing during an approval wait or
  -- an automatic pause keeps the rollout held after those end.
  actions["pause"]["disabled"] = paused_reason == "PausedByUser" or spec.paused == true
  -- A resume annotation does not override spec.paused: true (that needs a commit).
  actions["resume"]["disabled"] = spec.paused == true
    or not (paused_reason == "PausedByUser" or paused_reason == "FailureThresholdExceeded")
  actions["approve"]["disabled"] = paused_reason ~= "WaitingForApproval"
end
return actions
