-- Argo CD health of a GcpTask (gcpcall.dev/v1alpha1).
-- Progressing: Pending, Queued or Running (or not yet handled by the operator).
-- Healthy: Succeeded; or Unknown (Cloud Tasks deleted the finished task without reporting
--   its outcome, as it does after a success in Direct delivery) when no failed attempt
--   was observed.
-- Degraded: Failed; Unknown after an observed failed attempt; or not created because
--   Ready is False for a reason that retrying does not fix (InvalidSpec, PermissionDenied...).
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

-- Ready=False reasons that the operator retries by itself.
local transient = {Creating = true, Updating = true, Deleting = true, GcpError = true,
                   BodySourceNotFound = true}

local status = obj.status
if status == nil or status.phase == nil then
  return hs
end
local phase = status.phase
local succeeded = condition(status, "Succeeded")
local ready = condition(status, "Ready")

if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = succeeded ~= nil and describe(succeeded) or "Succeeded"
  return hs
end
if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = succeeded ~= nil and describe(succeeded) or "Failed"
  return hs
end
if phase == "Unknown" then
  local attempt = status.lastAttempt
  if attempt ~= nil and attempt.code ~= nil and attempt.code ~= 0 then
    hs.status = "Degraded"
  else
    hs.status = "Healthy"
  end
  hs.message = succeeded ~= nil and describe(succeeded) or "Finished; outcome unknown"
  return hs
end

-- Pending, Queued, Running
if ready ~= nil and ready.status == "False" and not transient[ready.reason] then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end
hs.message = phase
if succeeded ~= nil and succeeded.message ~= nil and succeeded.message ~= "" then
  hs.message = phase .. ": " .. succeeded.message
end
return hs
