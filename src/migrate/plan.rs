//! Comparing the local migration files with what the database has recorded: a pure function, so
//! every state (pending, changed, missing, dirty) is tested without a database.

use std::collections::BTreeMap;

/// A migration file, as sqlx's resolver read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub version: i64,
    pub description: String,
    /// SHA-384 of the file's bytes, as sqlx computes and stores it.
    pub checksum: Vec<u8>,
    /// The file name, for messages (`20240101_add_users.sql`).
    pub file: String,
    pub no_tx: bool,
    /// A `.down.sql` exists for this version.
    pub reversible: bool,
}

/// A row of `_sqlx_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i64,
    pub description: String,
    pub checksum: Vec<u8>,
    /// False: the migration started and failed without rolling back (MySQL, or no-transaction).
    pub success: bool,
    pub installed_on: String,
    /// Nanoseconds; -1 when unknown (stamped, or the process died before recording it).
    pub execution_time: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Recorded with the same checksum.
    Applied,
    /// Not recorded yet.
    Pending,
    /// Recorded with another checksum: the file changed after it was applied.
    Changed,
    /// Recorded, but no local file has this version.
    Missing,
    /// Recorded as started but not finished.
    Dirty,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::Pending => "pending",
            State::Changed => "changed",
            State::Missing => "missing",
            State::Dirty => "dirty",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub version: i64,
    pub description: String,
    pub state: State,
    pub file: Option<String>,
    pub installed_on: Option<String>,
    pub execution_time: Option<i64>,
}

/// Every version, local or recorded, in order, with its state.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub rows: Vec<Row>,
}

impl Plan {
    pub fn new(local: &[Local], applied: &[Applied]) -> Plan {
        let mut rows: BTreeMap<i64, Row> = BTreeMap::new();
        let recorded: BTreeMap<i64, &Applied> = applied.iter().map(|a| (a.version, a)).collect();
        for l in local {
            let (state, installed_on, execution_time) = match recorded.get(&l.version) {
                None => (State::Pending, None, None),
                Some(a) => {
                    let state = if !a.success {
                        State::Dirty
                    } else if a.checksum != l.checksum {
                        State::Changed
                    } else {
                        State::Applied
                    };
                    (state, Some(a.installed_on.clone()), Some(a.execution_time))
                }
            };
            rows.insert(
                l.version,
                Row {
                    version: l.version,
                    description: l.description.clone(),
                    state,
                    file: Some(l.file.clone()),
                    installed_on,
                    execution_time,
                },
            );
        }
        for a in applied {
            rows.entry(a.version).or_insert_with(|| Row {
                version: a.version,
                description: a.description.clone(),
                state: if a.success { State::Missing } else { State::Dirty },
                file: None,
                installed_on: Some(a.installed_on.clone()),
                execution_time: Some(a.execution_time),
            });
        }
        Plan { rows: rows.into_values().collect() }
    }

    pub fn with_state(&self, state: State) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(move |r| r.state == state)
    }

    pub fn pending(&self) -> Vec<i64> {
        self.with_state(State::Pending).map(|r| r.version).collect()
    }

    /// The first reason the database cannot be migrated as it is, if any.
    pub fn problem(&self, ignore_missing: bool) -> Option<Problem> {
        if let Some(r) = self.with_state(State::Dirty).next() {
            return Some(Problem::Dirty(r.clone()));
        }
        if let Some(r) = self.with_state(State::Changed).next() {
            return Some(Problem::Changed(r.clone()));
        }
        if !ignore_missing && let Some(r) = self.with_state(State::Missing).next() {
            return Some(Problem::Missing(r.clone()));
        }
        None
    }

    /// Every local migration is applied with a matching checksum, and nothing is dirty.
    pub fn is_current(&self, ignore_missing: bool) -> bool {
        self.problem(ignore_missing).is_none() && self.pending().is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Dirty(Row),
    Changed(Row),
    Missing(Row),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(version: i64, sum: u8) -> Local {
        Local {
            version,
            description: format!("m{version}"),
            checksum: vec![sum],
            file: format!("{version}_m{version}.sql"),
            no_tx: false,
            reversible: false,
        }
    }

    fn applied(version: i64, sum: u8, success: bool) -> Applied {
        Applied {
            version,
            description: format!("m{version}"),
            checksum: vec![sum],
            success,
            installed_on: "2026-01-01 00:00:00".into(),
            execution_time: 1_000_000,
        }
    }

    #[test]
    fn fresh_database_has_everything_pending() {
        let plan = Plan::new(&[local(1, 1), local(2, 2)], &[]);
        assert_eq!(plan.pending(), [1, 2]);
        assert!(plan.problem(false).is_none());
        assert!(!plan.is_current(false));
    }

    #[test]
    fn fully_applied_is_current() {
        let plan = Plan::new(&[local(1, 1), local(2, 2)], &[applied(1, 1, true), applied(2, 2, true)]);
        assert!(plan.is_current(false));
    }

    #[test]
    fn changed_file_is_a_problem() {
        let plan = Plan::new(&[local(1, 9)], &[applied(1, 1, true)]);
        assert!(matches!(plan.problem(false), Some(Problem::Changed(r)) if r.version == 1));
    }

    #[test]
    fn missing_file_is_a_problem_unless_ignored() {
        let plan = Plan::new(&[local(2, 2)], &[applied(1, 1, true), applied(2, 2, true)]);
        assert!(matches!(plan.problem(false), Some(Problem::Missing(r)) if r.version == 1));
        assert!(plan.problem(true).is_none());
        assert!(plan.is_current(true));
    }

    #[test]
    fn dirty_row_comes_first() {
        let plan = Plan::new(&[local(1, 9), local(2, 2)], &[applied(1, 1, true), applied(2, 2, false)]);
        assert!(matches!(plan.problem(false), Some(Problem::Dirty(r)) if r.version == 2));
    }

    #[test]
    fn rows_are_ordered_by_version() {
        let plan = Plan::new(&[local(3, 3), local(1, 1)], &[applied(2, 2, true)]);
        let versions: Vec<i64> = plan.rows.iter().map(|r| r.version).collect();
        assert_eq!(versions, [1, 2, 3]);
        assert_eq!(plan.rows[1].state, State::Missing);
    }
}
