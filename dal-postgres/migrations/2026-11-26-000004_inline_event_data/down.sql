ALTER FUNCTION dal_event_data(jsonb, integer, integer, integer) IMMUTABLE;
