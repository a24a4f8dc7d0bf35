CREATE TABLE execution_events_old (
    seq                   INTEGER NOT NULL PRIMARY KEY,
    id                    BLOB    NOT NULL CHECK (length(id) = 16),
    workflow_execution_id BLOB    NOT NULL CHECK (length(workflow_execution_id) = 16),
    task_execution_id     BLOB    NOT NULL CHECK (length(task_execution_id) = 16),
    event_type            TEXT    NOT NULL CHECK (event_type IN ('created', 'ready', 'started', 'claimed', 'completed', 'failed', 'skipped', 'abandoned', 'retry_scheduled', 'recovered', 'reset', 'released')),
    event_data            TEXT    NOT NULL CHECK (json_valid(event_data)),
    runner_id             BLOB    CHECK (runner_id IS NULL OR length(runner_id) = 16),
    created_at            INTEGER NOT NULL
) STRICT;
INSERT INTO execution_events_old (seq, id, workflow_execution_id, task_execution_id, event_type, event_data, runner_id, created_at)
    SELECT seq, id, workflow_execution_id, task_execution_id, event_type, event_data, runner_id, created_at FROM execution_events
    WHERE event_type NOT IN ('deferred', 'resumed');
DROP TABLE execution_events;
ALTER TABLE execution_events_old RENAME TO execution_events;
CREATE INDEX execution_events_task_idx ON execution_events (task_execution_id, seq);
CREATE INDEX execution_events_workflow_idx ON execution_events (workflow_execution_id, seq);
ALTER TABLE task_executions DROP COLUMN sub_status;
