-- The execution history: one event per change of a task, written by the same statement as the
-- change (a data-modifying WITH). Append-only.

-- A UUIDv7 for time `at`: the milliseconds since the epoch in the first 48 bits, the rest from a
-- random (v4) UUID, with the version nibble turned from 4 (0100) into 7 (0111).
CREATE FUNCTION dal_uuid_v7(at timestamptz) RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

-- An event's data: the operation's arguments, then the task's counters after the change.
-- dal_core::event::EventSpec::data_for builds the same object in Rust (for SQLite).
CREATE FUNCTION dal_event_data(arguments jsonb, attempt integer, claim integer, recovery_attempts integer)
RETURNS jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT arguments || jsonb_build_object('attempt', attempt, 'claim', claim, 'recovery_attempts', recovery_attempts)
$$;

CREATE TABLE execution_events (
    seq                   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                    uuid        NOT NULL,
    workflow_execution_id uuid        NOT NULL,
    task_execution_id     uuid        NOT NULL,
    event_type            text        NOT NULL CHECK (event_type IN ('created', 'ready', 'started', 'claimed', 'completed', 'failed', 'skipped', 'abandoned', 'retry_scheduled', 'recovered', 'reset', 'released')),
    event_data            jsonb       NOT NULL,
    runner_id             uuid,
    created_at            timestamptz NOT NULL
);

-- A task's history and a workflow's history, in order.
CREATE INDEX execution_events_task_idx ON execution_events (task_execution_id, seq);
CREATE INDEX execution_events_workflow_idx ON execution_events (workflow_execution_id, seq);
