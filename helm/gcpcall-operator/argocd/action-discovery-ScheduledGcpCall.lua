-- Argo CD resource actions of a ScheduledGcpCall: "run-now".
local actions = {}
actions["run-now"] = {disabled = obj.metadata.deletionTimestamp ~= nil}
return actions
