-- Argo CD action "run-now": ask the operator for one immediate run of the Cloud Scheduler
-- job (RunJob). Any new value of the annotation triggers one run; the handled value shows
-- in status.lastRunRequest.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["gcpcall.dev/run-requested-at"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
