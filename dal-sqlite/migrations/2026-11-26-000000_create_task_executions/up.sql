-- Task executions. Ids are 16-byte UUIDs (BLOB), times are microseconds since the Unix epoch
-- (INTEGER, UTC), JSON is text. STRICT makes SQLite enforce the declared types.
CREATE TABLE task_executions (
    id                    BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    workflow_execution_id BLOB    NOT NULL CHECK (length(workflow_execution_id) = 16),
    task_name             TEXT    NOT NULL CHECK (length(task_name) BETWEEN 1 AND 255),
    status                TEXT    NOT NULL CHECK (status IN ('not_started', 'ready', 'running', 'completed', 'failed', 'skipped')),
    attempt               INTEGER NOT NULL CHECK (attempt >= 1),
    max_attempts          INTEGER NOT NULL CHECK (max_attempts BETWEEN 1 AND 2147483647),
    trigger_rules         TEXT    NOT NULL CHECK (json_valid(trigger_rules)),
    task_configuration    TEXT    NOT NULL CHECK (json_valid(task_configuration)),
    error_details         TEXT,
    last_error            TEXT,
    retry_at              INTEGER,
    started_at            INTEGER,
    completed_at          INTEGER,
    recovery_attempts     INTEGER NOT NULL DEFAULT 0 CHECK (recovery_attempts BETWEEN 0 AND 2147483647),
    last_recovery_at      INTEGER,
    claimed_by            BLOB    CHECK (claimed_by IS NULL OR length(claimed_by) = 16),
    heartbeat_at          INTEGER,
    abandoned_at          INTEGER,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    CHECK (attempt <= max_attempts),
    CONSTRAINT task_executions_workflow_task_name_key UNIQUE (workflow_execution_id, task_name)
) STRICT;

-- The unique constraint's index serves reads by workflow execution.
-- Ready tasks by due time, for claiming and retry dispatch.
CREATE INDEX task_executions_ready_idx ON task_executions (retry_at, id) WHERE status = 'ready';
-- Claimed tasks by last heartbeat, for the stale-claim sweep.
CREATE INDEX task_executions_claimed_idx ON task_executions (heartbeat_at) WHERE claimed_by IS NOT NULL;
