CREATE INDEX execution_events_workflow_idx ON execution_events (workflow_execution_id, seq);
CREATE INDEX execution_events_task_idx ON execution_events (task_execution_id, seq);
ALTER TABLE execution_events DROP CONSTRAINT execution_events_pkey;
ALTER TABLE execution_events ADD PRIMARY KEY (seq);
