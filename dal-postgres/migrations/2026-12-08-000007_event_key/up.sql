-- One key for an event: its task and its place in the history, (task_execution_id, seq), the
-- order a task's history is read in. A workflow's history is read through its tasks. An event
-- writes one index entry instead of three (seq, task, workflow); no row is rewritten.
CREATE UNIQUE INDEX execution_events_key ON execution_events (task_execution_id, seq);
ALTER TABLE execution_events DROP CONSTRAINT execution_events_pkey;
ALTER TABLE execution_events ADD CONSTRAINT execution_events_pkey
    PRIMARY KEY USING INDEX execution_events_key;
DROP INDEX execution_events_task_idx;
DROP INDEX execution_events_workflow_idx;
