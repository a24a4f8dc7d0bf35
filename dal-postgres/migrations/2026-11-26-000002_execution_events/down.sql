DROP TABLE execution_events;
DROP FUNCTION dal_event_data(jsonb, integer, integer, integer);
DROP FUNCTION dal_uuid_v7(timestamptz);
