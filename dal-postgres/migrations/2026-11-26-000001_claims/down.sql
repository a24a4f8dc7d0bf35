DROP INDEX task_executions_ready_idx;
CREATE INDEX task_executions_ready_idx ON task_executions (retry_at, id) WHERE status = 'ready';
ALTER TABLE task_executions DROP COLUMN claim_count;
