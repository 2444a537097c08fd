//! Driver tests that need no server: SQL rendered for each dialect,
//! passwords kept out of messages, rows read the same from either driver.

use super::*;

#[test]
fn placeholders_and_types_per_dialect() {
    assert_eq!(
        postgres_sql("UPDATE t SET a = ?2 WHERE b = ?1 AND c = '?'"),
        "UPDATE t SET a = $2 WHERE b = $1 AND c = '?'"
    );
    let ddl = "CREATE TABLE t (id {id}, at {real} NOT NULL, n {int})";
    assert_eq!(
        render_ddl(ddl, Dialect::Sqlite),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, at REAL NOT NULL, n INTEGER)"
    );
    assert_eq!(
        render_ddl(ddl, Dialect::Postgres),
        "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, n BIGINT)"
    );
}

#[test]
fn urls_lose_their_password_in_messages() {
    assert_eq!(
        redact("postgres://farm:s3cret@db.example:5432/farm?sslmode=disable"),
        "postgres://farm:***@db.example:5432/farm?sslmode=disable"
    );
    assert_eq!(redact("postgres://farm@db/farm"), "postgres://farm@db/farm");
    assert_eq!(redact("postgres:///farm?host=/run/pg"), "postgres:///farm?host=/run/pg");
}

#[test]
fn rows_read_leniently_across_drivers() {
    let row = Row(vec![
        Value::Int(1),
        Value::Real(2.5),
        Value::Null,
        Value::Text("x".into()),
    ]);
    assert!(row.bool(0));
    assert_eq!((row.real(0), row.int(1), row.real(2)), (1.0, 2, 0.0));
    assert_eq!((row.opt_text(2), row.text(3).unwrap()), (None, "x".to_owned()));
    assert!(row.text(2).is_err() && row.text(9).is_err());
}
