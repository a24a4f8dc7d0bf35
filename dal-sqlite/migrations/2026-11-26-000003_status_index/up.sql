-- One index by status, in id order, with retry_at: claim_ready and list_ready read the oldest
-- due Ready tasks as a range of it (the status is a bound parameter, so the index must not be a
-- partial one on status, which a prepared statement's generic plan could not use), and
-- count_by_status counts it without reading the table.
DROP INDEX task_executions_ready_idx;
CREATE INDEX task_executions_status_idx ON task_executions (status, id, retry_at);
