-- The queue at scale: the same indexes as on PostgreSQL (see its migration of the same name).
-- due_at: when a Ready task becomes claimable (microseconds since the epoch), the later of its
-- retry time and the time it entered Ready; set whenever a task enters Ready.
ALTER TABLE task_executions ADD COLUMN due_at INTEGER;
UPDATE task_executions SET due_at = max(coalesce(retry_at, updated_at), updated_at) WHERE status = 'ready';

DROP INDEX task_executions_status_idx;
CREATE INDEX task_executions_due_idx ON task_executions (due_at, id) WHERE status = 'ready';
CREATE INDEX task_executions_due_retry_idx ON task_executions (due_at, id)
    WHERE status = 'ready' AND retry_at IS NOT NULL;
DROP INDEX task_executions_claimed_idx;
CREATE INDEX task_executions_claimed_idx ON task_executions (id) WHERE claimed_by IS NOT NULL;
CREATE INDEX task_executions_finished_idx ON task_executions (completed_at, id)
    WHERE status IN ('completed', 'failed', 'skipped');
