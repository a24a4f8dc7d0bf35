CREATE INDEX execution_events_workflow_idx ON execution_events (workflow_execution_id, seq);
