//! Input validation shared by every backend, run before anything is sent.
//!
//! The rules accept exactly what both PostgreSQL and SQLite store and read back unchanged, so a
//! call is accepted or rejected the same way on each backend. Rejected input writes nothing.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, Datelike, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Problem, ValidationError};
use crate::{NewTaskExecution, TaskStatus};

/// The longest task name, in characters.
pub const TASK_NAME_MAX_CHARS: usize = 255;
/// The longest reason or error message, in bytes of UTF-8.
pub const MESSAGE_MAX_BYTES: usize = 64 * 1024;
/// The deepest nesting of a JSON document (SQLite reads JSON back with a parser that stops at
/// 128 levels; PostgreSQL has its own stack limit).
pub const JSON_MAX_DEPTH: usize = 64;

type Checked<T = ()> = Result<T, ValidationError>;

/// Checks one new task.
pub fn new_task(new: &NewTaskExecution) -> Checked {
    task_name(&new.task_name)?;
    if !matches!(new.status, TaskStatus::NotStarted | TaskStatus::Ready) {
        return Err(ValidationError::new("status", Problem::StatusNotAllowed(new.status)));
    }
    in_range("max_attempts", new.max_attempts, 1, i32::MAX)?;
    in_range("attempt", new.attempt, 1, new.max_attempts)?;
    json("trigger_rules", &new.trigger_rules)?;
    json("task_configuration", &new.task_configuration)?;
    if let Some(at) = new.retry_at {
        time("retry_at", at)?;
    }
    Ok(())
}

/// Checks a batch: every task, and no workflow execution and task name twice.
pub fn new_tasks(news: &[NewTaskExecution]) -> Checked {
    let mut seen: HashMap<(Uuid, &str), usize> = HashMap::with_capacity(news.len());
    for (index, new) in news.iter().enumerate() {
        new_task(new).map_err(|e| e.in_batch(index))?;
        if let Some(first) = seen.insert((new.workflow_execution_id, &new.task_name), index) {
            return Err(ValidationError::new("task_name", Problem::DuplicateInBatch { first })
                .in_batch(index));
        }
    }
    Ok(())
}

/// Checks a task name: not blank, at most [`TASK_NAME_MAX_CHARS`] characters, no control
/// characters (NUL included).
pub fn task_name(name: &str) -> Checked {
    const FIELD: &str = "task_name";
    if name.trim().is_empty() {
        return Err(ValidationError::new(FIELD, Problem::Blank));
    }
    let len = name.chars().count();
    if len > TASK_NAME_MAX_CHARS {
        return Err(ValidationError::new(
            FIELD,
            Problem::TooLong { max: TASK_NAME_MAX_CHARS, len, unit: "characters" },
        ));
    }
    if name.contains('\0') {
        return Err(ValidationError::new(FIELD, Problem::ContainsNul));
    }
    if name.chars().any(char::is_control) {
        return Err(ValidationError::new(FIELD, Problem::ContainsControl));
    }
    Ok(())
}

/// Checks a reason or an error message: at most [`MESSAGE_MAX_BYTES`], no NUL. An empty
/// message is allowed. See [`sanitize_message`] to make any text acceptable.
pub fn message(field: &str, text: &str) -> Checked {
    if text.len() > MESSAGE_MAX_BYTES {
        return Err(ValidationError::new(
            field,
            Problem::TooLong { max: MESSAGE_MAX_BYTES, len: text.len(), unit: "bytes" },
        ));
    }
    if text.contains('\0') {
        return Err(ValidationError::new(field, Problem::ContainsNul));
    }
    Ok(())
}

/// Makes any text a valid message: NUL characters become U+FFFD and the text is cut, at a
/// character boundary, to [`MESSAGE_MAX_BYTES`]. For engines that record whatever a task
/// printed rather than have the failure rejected.
pub fn sanitize_message(text: &str) -> Cow<'_, str> {
    let mut text = if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    };
    if text.len() > MESSAGE_MAX_BYTES {
        let mut end = MESSAGE_MAX_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        match &mut text {
            Cow::Owned(owned) => owned.truncate(end),
            Cow::Borrowed(borrowed) => *borrowed = &borrowed[..end],
        }
    }
    text
}

/// The earliest time [`time`] accepts: 0001-01-01T00:00:00Z.
pub fn earliest_time() -> DateTime<Utc> {
    // 0001-01-01T00:00:00Z is 62,135,596,800 s before the Unix epoch; chrono holds it.
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Checks that `at` lies in the years 1 to 9999, which both backends store.
pub fn time(field: &str, at: DateTime<Utc>) -> Checked {
    if (1..=9999).contains(&at.year()) {
        Ok(())
    } else {
        Err(ValidationError::new(field, Problem::TimeOutOfRange))
    }
}

/// Checks that `value` lies in `min..=max`.
pub fn in_range(field: &str, value: i32, min: i32, max: i32) -> Checked {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            Problem::OutOfRange { min: min.into(), max: max.into(), value: value.into() },
        ))
    }
}

/// Checks a JSON document: no NUL in any string or key (PostgreSQL's `jsonb` rejects
/// `\u0000`), nesting at most [`JSON_MAX_DEPTH`].
pub fn json(field: &str, value: &Value) -> Checked {
    fn walk(value: &Value, depth: usize) -> Result<(), Problem> {
        if depth > JSON_MAX_DEPTH {
            return Err(Problem::TooDeep { max: JSON_MAX_DEPTH });
        }
        match value {
            Value::String(s) if s.contains('\0') => Err(Problem::ContainsNul),
            Value::Array(items) => items.iter().try_for_each(|v| walk(v, depth + 1)),
            Value::Object(map) => map.iter().try_for_each(|(k, v)| {
                if k.contains('\0') { Err(Problem::ContainsNul) } else { walk(v, depth + 1) }
            }),
            _ => Ok(()),
        }
    }
    walk(value, 1).map_err(|problem| ValidationError::new(field, problem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_makes_any_text_valid() {
        let text = format!("{}é", "x".repeat(MESSAGE_MAX_BYTES - 1));
        let clean = sanitize_message(&text);
        assert_eq!(clean.len(), MESSAGE_MAX_BYTES - 1);
        assert_eq!(message("e", &clean), Ok(()));
        assert_eq!(sanitize_message("a\0b"), "a\u{FFFD}b");
        assert!(matches!(sanitize_message("plain"), Cow::Borrowed("plain")));
    }

    /// The edges the conformance suite does not reach through a store: a newline in a name, NUL
    /// in a JSON key, nesting at the limit, the parsers' refusals, a message's text.
    #[test]
    fn edges_of_the_rules() {
        let refused = |field: &str, problem| Err(ValidationError::new(field, problem));
        assert_eq!(task_name("a\nb"), refused("task_name", Problem::ContainsControl));
        let key = serde_json::json!({"k\u{0}": 1});
        assert_eq!(json("trigger_rules", &key), refused("trigger_rules", Problem::ContainsNul));
        let nest = |depth| (1..depth).fold(Value::from(1), |v, _| Value::Array(vec![v]));
        assert_eq!(json("c", &nest(JSON_MAX_DEPTH)), Ok(()));
        let deep = refused("c", Problem::TooDeep { max: JSON_MAX_DEPTH });
        assert_eq!(json("c", &nest(JSON_MAX_DEPTH + 1)), deep);
        let err =
            crate::DalError::from(ValidationError::new("task_name", Problem::Blank).in_batch(3));
        assert_eq!(err.to_string(), "invalid tasks[3].task_name: must not be empty or blank");
        assert!(!crate::DalError::NotFound { id: Uuid::nil() }.is_retryable());
        let status = "Ready".parse::<TaskStatus>();
        assert_eq!(status, Err(crate::status::UnknownStatus("Ready".into())));
        for status in TaskStatus::ALL {
            assert_eq!(serde_json::to_value(status).ok(), Some(Value::from(status.as_str())));
        }
        assert!("nope".parse::<crate::EventType>().is_err());
    }
}
