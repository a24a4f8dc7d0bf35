-- dal_event_data calls jsonb_build_object, which is STABLE. Declared IMMUTABLE, the function could
-- not be inlined: every statement that wrote an event parsed and planned its body again and
-- called it through the SQL-function executor (about 45 to 65 µs a statement on this project's
-- machine, measured with benches/pgbench). Declared STABLE, as its body is, the planner inlines
-- it into each statement's plan.
ALTER FUNCTION dal_event_data(jsonb, integer, integer, integer) STABLE;
