-- The execution history: one event per change of a task, inserted in the same BEGIN IMMEDIATE
-- transaction as the change. Append-only; seq is the rowid, so it increases in write order.
CREATE TABLE execution_events (
    seq                   INTEGER NOT NULL PRIMARY KEY,
    id                    BLOB    NOT NULL CHECK (length(id) = 16),
    workflow_execution_id BLOB    NOT NULL CHECK (length(workflow_execution_id) = 16),
    task_execution_id     BLOB    NOT NULL CHECK (length(task_execution_id) = 16),
    event_type            TEXT    NOT NULL CHECK (event_type IN ('created', 'ready', 'started', 'claimed', 'completed', 'failed', 'skipped', 'abandoned', 'retry_scheduled', 'recovered', 'reset', 'released')),
    event_data            TEXT    NOT NULL CHECK (json_valid(event_data)),
    runner_id             BLOB    CHECK (runner_id IS NULL OR length(runner_id) = 16),
    created_at            INTEGER NOT NULL
) STRICT;

-- A task's history and a workflow's history, in order.
CREATE INDEX execution_events_task_idx ON execution_events (task_execution_id, seq);
CREATE INDEX execution_events_workflow_idx ON execution_events (workflow_execution_id, seq);
