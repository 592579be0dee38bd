-- Argo CD health of a ScheduledGcpCall (gcpcall.dev/v1alpha1).
-- Progressing: the operator has not yet handled the current spec, or is creating,
--   updating or deleting the Cloud Scheduler job, or waits for the ConfigMap/Secret the
--   body names; or the last run's long-running operation is still running.
-- Degraded: Ready is False (the job could not be made as specified) or the last run failed.
-- Suspended: the job is paused (spec.paused).
-- Healthy: the job exists as specified and the last run, if any, succeeded.
local hs = {status = "Progressing", message = "Waiting for the operator"}

local function condition(status, type_)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function describe(c)
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local status = obj.status
local generation = obj.metadata.generation
if status == nil then
  return hs
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for the operator to handle generation " .. generation
  return hs
end

local ready = condition(status, "Ready")
if ready == nil or ready.status == "Unknown" then
  if ready ~= nil then
    hs.message = describe(ready)
  end
  return hs
end
if ready.status == "False" then
  if ready.reason == "Creating" or ready.reason == "Updating" or ready.reason == "Deleting"
      or ready.reason == "BodySourceNotFound" then
    hs.message = describe(ready)
    return hs
  end
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

local lastRun = condition(status, "LastRunSucceeded")
if lastRun ~= nil and lastRun.status == "False" then
  hs.status = "Degraded"
  hs.message = "Last run failed: " .. describe(lastRun)
  return hs
end
if lastRun ~= nil and lastRun.reason == "OperationRunning" then
  hs.message = "Last run: " .. describe(lastRun)
  return hs
end

if ready.reason == "Paused" then
  hs.status = "Suspended"
  hs.message = "The Cloud Scheduler job is paused"
  return hs
end

hs.status = "Healthy"
if status.jobName ~= nil then
  hs.message = status.jobName
else
  hs.message = describe(ready)
end
return hs
