ALTER TABLE execution_events RESET (
    autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_vacuum_insert_scale_factor, autovacuum_vacuum_insert_threshold,
    autovacuum_vacuum_cost_delay
);
ALTER TABLE task_executions RESET (
    fillfactor, autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_vacuum_cost_delay, autovacuum_analyze_scale_factor, autovacuum_analyze_threshold
);
DROP INDEX task_executions_finished_idx;
DROP FUNCTION dal_stale_claims(timestamptz, text[], integer, integer);
DROP INDEX task_executions_claimed_idx;
CREATE INDEX task_executions_claimed_idx ON task_executions (heartbeat_at) WHERE claimed_by IS NOT NULL;
DROP INDEX task_executions_due_retry_idx;
DROP INDEX task_executions_due_idx;
CREATE INDEX task_executions_status_idx ON task_executions (status, id, retry_at);
ALTER TABLE task_executions DROP COLUMN due_at;
