-- The claim counter that fences leases: every claim adds one.
ALTER TABLE task_executions ADD COLUMN claim_count integer NOT NULL DEFAULT 0 CHECK (claim_count >= 0);

-- Claims take the oldest due Ready tasks by id; retry_at is in the index so that the due check
-- is made on the index.
DROP INDEX task_executions_ready_idx;
CREATE INDEX task_executions_ready_idx ON task_executions (id, retry_at) WHERE status = 'ready';
