-- The example app's schema, portable across PostgreSQL, MySQL/MariaDB and SQLite.
CREATE TABLE notes (
    id INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
