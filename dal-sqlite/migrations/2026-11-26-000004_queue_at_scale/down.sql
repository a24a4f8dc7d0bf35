DROP INDEX task_executions_finished_idx;
DROP INDEX task_executions_claimed_idx;
CREATE INDEX task_executions_claimed_idx ON task_executions (heartbeat_at) WHERE claimed_by IS NOT NULL;
DROP INDEX task_executions_due_retry_idx;
DROP INDEX task_executions_due_idx;
CREATE INDEX task_executions_status_idx ON task_executions (status, id, retry_at);
ALTER TABLE task_executions DROP COLUMN due_at;
