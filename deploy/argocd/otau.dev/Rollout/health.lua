-- Argo CD health of an otau.dev Rollout (Lua 5.1), from its conditions (docs/architecture.md §8):
--   Complete=True                                   -> Healthy
--     (CompletedWithFailures: every wave completed within the failure threshold, some devices
--     failed, refused or sent unreadable reports; Healthy, the message says so)
--   Aborted (spec.abort, Stalled reason Aborted)    -> Degraded
--   automatic pause (FailureThresholdExceeded)      -> Degraded
--   any other Stalled=True                          -> Degraded
--   user pause (spec.paused, an otau.dev/pause annotation not acted on yet, PausedByUser)
--   or waiting for approval                         -> Suspended
--   no status yet, an unobserved generation, a wave in progress -> Progressing
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

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
local spec = obj.spec or {}
local annotations = (obj.metadata and obj.metadata.annotations) or {}

if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report the rollout"
  return hs
end

local stalled = condition(status, "Stalled")
local paused = condition(status, "Paused")
local complete = condition(status, "Complete")
local progressing = condition(status, "Progressing")

if spec.abort == true or status.phase == "Aborted" or (is_true(stalled) and stalled.reason == "Aborted") then
  hs.status = "Degraded"
  hs.message = "Aborted: " .. text(stalled, "spec.abort is true")
  return hs
end
if is_true(paused) and paused.reason == "FailureThresholdExceeded" then
  hs.status = "Degraded"
  hs.message = "Paused automatically: " .. text(paused, "too many devices failed")
  return hs
end
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = stalled.reason .. ": " .. text(stalled, "the rollout cannot go on")
  return hs
end

local acted = status.actedOn or {}
local pause_annotation = annotations["otau.dev/pause"]
if spec.paused == true then
  hs.status = "Suspended"
  hs.message = "Paused by spec.paused"
  return hs
end
if is_true(paused) and (paused.reason == "PausedByUser" or paused.reason == "WaitingForApproval") then
  hs.status = "Suspended"
  hs.message = paused.reason .. ": " .. text(paused, "held")
  return hs
end
if pause_annotation ~= nil and pause_annotation ~= acted.pause then
  hs.status = "Suspended"
  hs.message = "Pause requested by the otau.dev/pause annotation"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
if is_true(complete) then
  hs.status = "Healthy"
  if complete.reason == "CompletedWithFailures" then
    hs.message = "Completed with failures: " .. text(complete, "some devices did not install the version")
  else
    hs.message = text(complete, "Every wave succeeded")
  end
  return hs
end
hs.status = "Progressing"
hs.message = text(progressing, "Waiting for the rollout to progress")
return hs
