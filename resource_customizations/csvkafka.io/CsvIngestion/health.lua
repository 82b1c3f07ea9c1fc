-- Argo CD health of a csvkafka.io/CsvIngestion, from the status its operator writes
-- (ingest_worker/spec.py CsvIngestionStatus; the phase machine is operator/ingest_operator/phases.py).
--
--   being deleted (metadata.deletionTimestamp)       Progressing, whatever the phase
--   no status yet                                    Progressing, "Waiting for the operator"
--   Failed                                           Degraded, with status.message
--     ... but spec edited since (generation ahead of
--     status.observedGeneration, spec.suspend unset) Progressing: the operator starts a new run
--   Completed                                        Healthy, with status.message
--   suspended (Progressing condition, reason
--     Suspended)                                     Suspended, with status.message
--   Pending, InProgress                              Progressing, with status.message
--   a phase this check does not know (an operator
--     newer than it)                                 from the standard conditions: Failed=True
--                                                    Degraded, Ready=True Healthy, Progressing=True
--                                                    Progressing; else Unknown, naming the phase
--
-- It uses only what Argo CD opens for a check installed through argocd-cm (base, table,
-- package, and os.time/os.date): no string library, so no string methods.
local hs = {}

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function result(health, status, default)
  hs.status = health
  if status ~= nil and status.message ~= nil and status.message ~= "" then
    hs.message = status.message
  else
    hs.message = default
  end
  return hs
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  return result("Progressing", nil, "Being deleted")
end

local status = obj.status
if status == nil or (status.phase == nil and status.conditions == nil) then
  return result("Progressing", nil, "Waiting for the operator")
end

local phase = status.phase
local progressing = condition(status, "Progressing")

if phase == "Failed" then
  local edited = obj.metadata ~= nil and obj.metadata.generation ~= nil
    and status.observedGeneration ~= nil
    and obj.metadata.generation ~= status.observedGeneration
  local suspend = obj.spec ~= nil and obj.spec.suspend == true
  if edited and not suspend then
    -- An edit of a Failed ingestion's spec is its retry (phases.py decide: a new run, or Failed
    -- again at once if the operator refuses the spec); either way the status catches up.
    return result("Progressing", nil, "Spec edited after the failure: waiting for the operator to start a new run")
  end
  return result("Degraded", status, "The ingestion failed")
end
if phase == "Completed" then
  return result("Healthy", status, "The ingestion completed")
end
if progressing ~= nil and progressing.reason == "Suspended" then
  return result("Suspended", status, "Suspended")
end
if phase == "Pending" or phase == "InProgress" then
  return result("Progressing", status, phase)
end

-- A phase written by an operator newer than this check: the standard conditions still say.
local failed = condition(status, "Failed")
if failed ~= nil and failed.status == "True" then
  return result("Degraded", status, "The ingestion failed")
end
local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  return result("Healthy", status, "The ingestion completed")
end
if progressing ~= nil and progressing.status == "True" then
  return result("Progressing", status, "In progress")
end
hs.status = "Unknown"
hs.message = "Unknown phase " .. tostring(phase) .. " (this check knows Pending, InProgress, Completed and Failed)"
return hs
