-- The sub-status of a Running task (SubStatus: 'active', 'deferred'), and the events of its
-- changes ('deferred', 'resumed'). SQLite cannot change a CHECK constraint in place: the
-- events table is rebuilt with the new list (rows, seq values and indexes kept).
ALTER TABLE task_executions ADD COLUMN sub_status TEXT
    CHECK (sub_status IS NULL OR sub_status IN ('active', 'deferred'));

CREATE TABLE execution_events_new (
    seq                   INTEGER NOT NULL PRIMARY KEY,
    id                    BLOB    NOT NULL CHECK (length(id) = 16),
    workflow_execution_id BLOB    NOT NULL CHECK (length(workflow_execution_id) = 16),
    task_execution_id     BLOB    NOT NULL CHECK (length(task_execution_id) = 16),
    event_type            TEXT    NOT NULL CHECK (event_type IN ('created', 'ready', 'started', 'claimed', 'completed', 'failed', 'skipped', 'abandoned', 'retry_scheduled', 'recovered', 'reset', 'released', 'deferred', 'resumed')),
    event_data            TEXT    NOT NULL CHECK (json_valid(event_data)),
    runner_id             BLOB    CHECK (runner_id IS NULL OR length(runner_id) = 16),
    created_at            INTEGER NOT NULL
) STRICT;
INSERT INTO execution_events_new (seq, id, workflow_execution_id, task_execution_id, event_type, event_data, runner_id, created_at)
    SELECT seq, id, workflow_execution_id, task_execution_id, event_type, event_data, runner_id, created_at FROM execution_events;
DROP TABLE execution_events;
ALTER TABLE execution_events_new RENAME TO execution_events;
CREATE INDEX execution_events_task_idx ON execution_events (task_execution_id, seq);
CREATE INDEX execution_events_workflow_idx ON execution_events (workflow_execution_id, seq);
