-- A workflow's history is read through its tasks: an event writes its row (keyed by seq) and
-- one index entry, (task_execution_id, seq), instead of two. No row is rewritten.
DROP INDEX execution_events_workflow_idx;
