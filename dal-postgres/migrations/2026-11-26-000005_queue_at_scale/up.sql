-- The queue at scale: every hot statement reads a partial index whose condition is a literal
-- in the statement, in the order the statement wants, and stops at its LIMIT.

-- When a Ready task becomes claimable: the later of its retry time and the time it (last)
-- entered Ready. Claims take the smallest (due_at, id) first. Set whenever a task enters
-- Ready, left as it was otherwise (so heart-beats and other writes that keep the status do not
-- touch any indexed column and can be HOT updates).
ALTER TABLE task_executions ADD COLUMN due_at timestamptz;
UPDATE task_executions SET due_at = GREATEST(retry_at, updated_at) WHERE status = 'ready';

-- The status index held every task; a claim read the whole Ready backlog from it and sorted
-- it (or stepped over the tasks not yet due). Replaced by partial indexes of what each
-- statement reads.
DROP INDEX task_executions_status_idx;
-- claim_ready and list_ready: the due Ready tasks, oldest due first. No OR: due_at is set on
-- every Ready task.
CREATE INDEX task_executions_due_idx ON task_executions (due_at, id) WHERE status = 'ready';
-- list_due_retries: the Ready tasks waiting for a retry (few), without stepping over the
-- fresh ones.
CREATE INDEX task_executions_due_retry_idx ON task_executions (due_at, id)
    WHERE status = 'ready' AND retry_at IS NOT NULL;
-- The sweep: the claimed tasks (few), in id order, the order the sweep locks them in. Not
-- keyed by heartbeat_at, so a heart-beat changes no indexed column.
DROP INDEX task_executions_claimed_idx;
CREATE INDEX task_executions_claimed_idx ON task_executions (id) WHERE claimed_by IS NOT NULL;
-- The sweep's candidates: the stale claims, locked in id order, skipping rows another
-- transaction holds. A function only to scope two planner settings to this one query: it must
-- read the claimed tasks' index, never the table. The planner's estimate for that small index
-- is wrong whenever the statistics are older than the index's churn (every claim adds an entry,
-- every completion leaves a dead one until vacuum), and a sequential scan chosen then reads the
-- whole table on every sweep. ROWS tells the caller's plan to expect a few rows (primary-key
-- lookups, not a hash join over the table).
CREATE FUNCTION dal_stale_claims(older_than timestamptz, statuses text[], fewest integer, most integer)
RETURNS SETOF uuid LANGUAGE sql VOLATILE ROWS 10
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
    SELECT id FROM task_executions
    WHERE claimed_by IS NOT NULL AND heartbeat_at < older_than AND status = ANY (statuses)
      AND recovery_attempts BETWEEN fewest AND most
    ORDER BY id
    FOR UPDATE SKIP LOCKED
$$;

-- Retention: finished tasks by the time they finished (for a terminal task completed_at is
-- its last change).
CREATE INDEX task_executions_finished_idx ON task_executions (completed_at, id)
    WHERE status IN ('completed', 'failed', 'skipped');

-- A queue table: every task is updated two or three times within seconds of its creation.
-- Free space in each page lets an update that changes no indexed column (a heart-beat) stay on
-- the page as a HOT update, without new index entries. Vacuum runs on a fixed number of dead
-- rows rather than a share of the table (a share of millions of rows is millions of dead
-- index entries in the claim's path), and unthrottled.
ALTER TABLE task_executions SET (
    fillfactor = 85,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000
);
-- Append-only, pruned by retention: vacuum after inserts keeps its visibility map current
-- (index-only scans) and after pruning reclaims the space.
ALTER TABLE execution_events SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 100000,
    autovacuum_vacuum_cost_delay = 0
);
