//! What the store checks of its session when it opens, before it writes anything: that the
//! server settings asked for in the connection URL (libpq's `options`, or `PGOPTIONS`) took
//! effect (a pooler such as PgBouncer drops them), that a schema is selected, and (behind a
//! transaction pooler) that the planner settings the store relies on were made on the server.
//! A failed check is [`DalError::Settings`].

use dal_core::{DalError, Result};
use diesel::sql_types::{Nullable, Text};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};

use dal_diesel::errors::from_diesel;

/// The server settings `url` asks for with `-c name=value` (or `--name=value`) in its
/// `options` parameter, or in `PGOPTIONS` when the URL has none, in the order given.
pub fn requested_settings(url: &str) -> Vec<(String, String)> {
    let options = options_of(url).or_else(|| std::env::var("PGOPTIONS").ok());
    options.map(|o| parse_options(&o)).unwrap_or_default()
}

/// The value of the `options` parameter of a libpq URL (`postgres://...?options=...`,
/// percent-decoded) or key-value string (`options='-c a=b'`), if any.
fn options_of(url: &str) -> Option<String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let query = url.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (percent_decode(key) == "options").then(|| percent_decode(value))
        })
    } else {
        keyword_values(url).into_iter().find_map(|(key, value)| (key == "options").then_some(value))
    }
}

/// `text` with `%XX` escapes (and `+`, which libpq leaves alone, kept as is) decoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `key=value` pairs of a libpq key-value string; a value may be single-quoted, with `\`
/// escaping the next character.
fn keyword_values(conninfo: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = conninfo.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|&c| c != '=' && !c.is_whitespace())).collect();
        if key.is_empty() {
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next_if_eq(&'=').is_none() {
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
    pairs
}

/// The settings of a libpq `options` string: `-c name=value`, `-cname=value` and
/// `--name=value`, words separated by spaces (`\` escapes the next character). Other
/// switches are left out.
fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let assignment = if word == "-c" {
            words.next()
        } else if let Some(rest) = word.strip_prefix("--") {
            Some(rest.to_owned())
        } else {
            word.strip_prefix("-c").map(str::to_owned)
        };
        if let Some((name, value)) = assignment.as_deref().and_then(|a| a.split_once('=')) {
            // The server spells settings with `_`; `--name=value` may use `-`.
            settings.push((name.replace('-', "_"), value.to_owned()));
        }
    }
    settings
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Nullable<Text>)]
    value: Option<String>,
}

fn read(conn: &mut PgConnection, sql: &'static str, binds: &[&str]) -> Result<Option<String>> {
    let query = diesel::sql_query(sql).into_boxed();
    let query = binds.iter().fold(query, |q, value| q.bind::<Text, _>(value.to_string()));
    query.get_result::<Setting>(conn).map(|s| s.value).map_err(from_diesel)
}

/// Fails with [`DalError::Settings`] unless the session on `conn` has each of `requested`
/// (compared as the server spells the value: each one is set with `SET LOCAL` inside a
/// transaction that is rolled back, and the spelling it gets compared with the session's; a
/// custom setting the session lacks, such as a dropped `myapp.tenant`, reads as empty), a
/// schema selected by its `search_path`, and, when `planner_settings` is set, each of those
/// at its value. Runs a few statements; writes nothing.
pub fn check(
    conn: &mut PgConnection,
    requested: &[(String, String)],
    planner_settings: &[(&str, &str)],
) -> Result<()> {
    for (name, value) in requested {
        let actual = read(conn, "SELECT current_setting($1, true) AS value", &[name])?;
        let wanted = normalized(conn, name, value)?;
        if actual != wanted {
            return Err(DalError::Settings {
                setting: name.clone(),
                requested: value.clone(),
                actual: actual.unwrap_or_default(),
                hint: "the connection's `options` did not reach the server (a connection pooler \
                       drops them): set it on the server instead, with ALTER ROLE ... SET or \
                       ALTER DATABASE ... SET"
                    .to_owned(),
            });
        }
    }
    if read(conn, "SELECT current_schema() AS value", &[])?.is_none() {
        let search_path =
            read(conn, "SELECT current_setting('search_path') AS value", &[])?.unwrap_or_default();
        return Err(DalError::Settings {
            setting: "current_schema()".to_owned(),
            requested: format!("a schema of search_path {search_path}"),
            actual: "none".to_owned(),
            hint: "none of the schemas of the search_path exists: create the schema first"
                .to_owned(),
        });
    }
    for &(name, value) in planner_settings {
        let actual = read(conn, "SELECT current_setting($1, true) AS value", &[name])?;
        if actual.as_deref() != Some(value) {
            return Err(DalError::Settings {
                setting: name.to_owned(),
                requested: value.to_owned(),
                actual: actual.unwrap_or_default(),
                hint: format!(
                    "behind a transaction pooler the store cannot set it on its sessions: set \
                     it on the store's role (ALTER ROLE <role> SET {name} = {value}) or \
                     database, or turn PgOptions::index_plans off"
                ),
            });
        }
    }
    Ok(())
}

/// How the server spells `value` for setting `name`: set with `SET LOCAL` in a transaction
/// that is rolled back at once. One transaction, so it stays on one server connection behind
/// a transaction pooler.
fn normalized(conn: &mut PgConnection, name: &str, value: &str) -> Result<Option<String>> {
    use diesel::connection::SimpleConnection;
    conn.batch_execute("BEGIN").map_err(from_diesel)?;
    let spelled = read(conn, "SELECT set_config($1, $2, true) AS value", &[name, value]);
    conn.batch_execute("ROLLBACK").map_err(from_diesel)?;
    spelled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect()
    }

    #[test]
    fn options_are_read_from_a_url_and_percent_decoded() {
        assert_eq!(
            requested_settings(
                "postgres://u@h/db?sslmode=disable&options=-csearch_path%3Dtenant_a%20-c%20statement_timeout%3D5s"
            ),
            pairs(&[("search_path", "tenant_a"), ("statement_timeout", "5s")])
        );
        assert_eq!(
            requested_settings("postgresql://u@h/db?options=--lock-timeout=2s"),
            pairs(&[("lock_timeout", "2s")])
        );
    }

    #[test]
    fn options_are_read_from_a_keyword_string_quoted_or_not() {
        assert_eq!(
            requested_settings(
                "host=h user=u options='-c search_path=a\\,b -c work_mem=8MB' dbname=d"
            ),
            pairs(&[("search_path", "a,b"), ("work_mem", "8MB")])
        );
        assert_eq!(
            requested_settings("host=h options=-csearch_path=x"),
            pairs(&[("search_path", "x")])
        );
    }

    #[test]
    fn escaped_spaces_stay_in_a_value_and_other_switches_are_left_out() {
        assert_eq!(
            parse_options("-c application_name=a\\ b -d 2 -c x.y=1"),
            pairs(&[("application_name", "a b"), ("x.y", "1")])
        );
    }

    #[test]
    fn a_url_without_options_asks_for_nothing_but_what_pgoptions_holds() {
        assert_eq!(options_of("postgres://u@h/db?sslmode=disable"), None);
        assert_eq!(options_of("host=h dbname=d"), None);
        assert_eq!(percent_decode("a%3Db%2"), "a=b%2");
    }
}
