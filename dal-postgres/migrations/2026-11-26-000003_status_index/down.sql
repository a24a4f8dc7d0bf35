DROP INDEX task_executions_status_idx;
CREATE INDEX task_executions_ready_idx ON task_executions (id, retry_at) WHERE status = 'ready';
