//! The revision graph, as Alembic builds it from the revision files, and the database's place
//! in it. Pure: tested without files or a database.
//!
//! Alembic's rules, from its `RevisionMap`:
//! - a revision's *down revisions* are its `down_revision` (one, none for a base, several for a
//!   merge); its `depends_on` entries (revision ids or branch labels) are further parents that
//!   must be applied first, but do not make a branch;
//! - the *heads* are the revisions no other revision names as `down_revision`, and
//!   `alembic_version` holds a row per applied revision that nothing applied descends from,
//!   through either kind of parent: a head that another revision depends on has no row of its
//!   own once that one is applied. At the heads, every head is applied;
//! - a revision is applied when it is a row or an ancestor of one, through both kinds of parent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub id: String,
    /// `down_revision`: empty for a base, two or more for a merge.
    pub down: Vec<String>,
    /// `depends_on`, resolved to revision ids.
    pub depends_on: Vec<String>,
    pub branch_labels: Vec<String>,
    pub message: String,
    pub file: PathBuf,
}

impl Revision {
    fn parents(&self) -> impl Iterator<Item = &String> {
        self.down.iter().chain(&self.depends_on)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// Parents before children; among revisions free to go next, in file order.
    pub revisions: Vec<Revision>,
    index: BTreeMap<String, usize>,
    /// In the same order as `revisions`.
    pub heads: Vec<String>,
}

/// Characters Alembic refuses in a revision id.
const ILLEGAL: &[char] = &['@', '-', '+'];

impl Graph {
    /// Validates and orders the revisions, given in file order. The error names the file(s).
    pub fn new(revisions: Vec<Revision>) -> Result<Graph, String> {
        let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
        let mut labels: BTreeMap<String, usize> = BTreeMap::new();
        for (n, r) in revisions.iter().enumerate() {
            if r.id.is_empty() || r.id.contains(ILLEGAL) {
                return Err(format!(
                    "{}: revision id '{}' is empty or has one of @ - +, which Alembic does not allow",
                    r.file.display(),
                    r.id
                ));
            }
            if let Some(other) = by_id.insert(r.id.clone(), n) {
                return Err(format!(
                    "revision id '{}' is declared twice, in {} and {}: give one of them a new id",
                    r.id,
                    revisions[other].file.display(),
                    r.file.display()
                ));
            }
            for label in &r.branch_labels {
                if let Some(other) = labels.insert(label.clone(), n) {
                    return Err(format!(
                        "branch label '{label}' is used by {} and {}: a label names one branch",
                        revisions[other].file.display(),
                        r.file.display()
                    ));
                }
            }
        }
        if let Some((label, &n)) = labels.iter().find(|(label, _)| by_id.contains_key(*label)) {
            return Err(format!(
                "branch label '{label}' in {} is also a revision id, which Alembic refuses: rename the label",
                revisions[n].file.display()
            ));
        }
        let mut revisions = revisions;
        for r in &mut revisions {
            for down in &r.down {
                if !by_id.contains_key(down) {
                    return Err(format!(
                        "{}: down_revision '{down}' is not the revision of any file: restore that file, or \
                         fix down_revision",
                        r.file.display()
                    ));
                }
            }
            let mut deps = Vec::with_capacity(r.depends_on.len());
            for dep in &r.depends_on {
                let resolved = if by_id.contains_key(dep) {
                    dep.clone()
                } else if let Some(&n) = labels.get(dep) {
                    // Filled in below: labels point at indices into the list as given.
                    format!("\0{n}")
                } else {
                    return Err(format!(
                        "{}: depends_on '{dep}' is neither a revision nor a branch label",
                        r.file.display()
                    ));
                };
                deps.push(resolved);
            }
            r.depends_on = deps;
        }
        let ids: Vec<String> = revisions.iter().map(|r| r.id.clone()).collect();
        for r in &mut revisions {
            for dep in &mut r.depends_on {
                if let Some(n) = dep.strip_prefix('\0') {
                    *dep = ids[n.parse::<usize>().expect("written above")].clone();
                }
            }
            if r.parents().any(|p| *p == r.id) {
                return Err(format!("{}: revision '{}' names itself as its parent", r.file.display(), r.id));
            }
        }

        // Kahn's algorithm; whatever never becomes free is on a cycle.
        let mut waiting: Vec<usize> =
            revisions.iter().map(|r| r.parents().collect::<BTreeSet<_>>().len()).collect();
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); revisions.len()];
        for (n, r) in revisions.iter().enumerate() {
            for p in r.parents().collect::<BTreeSet<_>>() {
                children[by_id[p]].push(n);
            }
        }
        let mut free: BTreeSet<usize> = (0..revisions.len()).filter(|n| waiting[*n] == 0).collect();
        let mut order = Vec::with_capacity(revisions.len());
        while let Some(n) = free.pop_first() {
            order.push(n);
            for &c in &children[n] {
                waiting[c] -= 1;
                if waiting[c] == 0 {
                    free.insert(c);
                }
            }
        }
        if order.len() < revisions.len() {
            let stuck: Vec<String> = (0..revisions.len())
                .filter(|n| waiting[*n] > 0)
                .map(|n| format!("{} ({})", revisions[n].id, revisions[n].file.display()))
                .collect();
            return Err(format!(
                "the revisions form a cycle through {}: fix their down_revision / depends_on",
                stuck.join(", ")
            ));
        }
        let has_child: BTreeSet<&String> = revisions.iter().flat_map(|r| &r.down).collect();
        let mut slots: Vec<Option<Revision>> = revisions.iter().cloned().map(Some).collect();
        let ordered: Vec<Revision> = order.iter().map(|&n| slots[n].take().expect("each once")).collect();
        let heads = ordered.iter().filter(|r| !has_child.contains(&r.id)).map(|r| r.id.clone()).collect();
        let index = ordered.iter().enumerate().map(|(n, r)| (r.id.clone(), n)).collect();
        Ok(Graph { revisions: ordered, index, heads })
    }

    pub fn get(&self, id: &str) -> Option<&Revision> {
        self.index.get(id).map(|&n| &self.revisions[n])
    }

    /// `ids` and every revision they descend from, through both kinds of parent.
    pub fn ancestors<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = ids.into_iter().filter(|id| self.index.contains_key(*id)).collect();
        while let Some(id) = stack.pop() {
            if seen.insert(id.clone()) {
                stack.extend(self.get(id).expect("only known ids are pushed").parents());
            }
        }
        seen
    }

    /// A revision argument as Alembic's commands take it: `heads`, `head` (only with one head),
    /// `base` (none), a full id, a branch label (the revision that carries it), an unambiguous
    /// prefix of an id, or `X@head` (the head of X's branch). Empty for `base`.
    pub fn resolve(&self, spec: &str) -> Result<Vec<String>, String> {
        if spec.trim().is_empty() {
            return Err("an empty revision: give a revision id, a branch label, heads, head or base".into());
        }
        if let Some((root, "head")) = spec.split_once('@') {
            let root = match self.resolve(root)?.as_slice() {
                [one] => one.clone(),
                _ => return Err(format!("'{spec}': {root} is not one revision")),
            };
            let heads: Vec<String> =
                self.heads.iter().filter(|h| self.ancestors([*h]).contains(&root)).cloned().collect();
            return match heads.len() {
                1 => Ok(heads),
                n => Err(format!(
                    "'{spec}': the branch from {root} has {n} heads ({}); name one",
                    heads.join(", ")
                )),
            };
        }
        if let Some(r) = self.revisions.iter().find(|r| r.branch_labels.iter().any(|l| l == spec)) {
            return Ok(vec![r.id.clone()]);
        }
        match spec {
            "heads" => return Ok(self.heads.clone()),
            "base" => return Ok(Vec::new()),
            "head" if self.heads.len() == 1 => return Ok(self.heads.clone()),
            "head" => {
                return Err(format!(
                    "'head' is ambiguous: there are {} heads ({}); name one, or use heads",
                    self.heads.len(),
                    self.heads.join(", ")
                ));
            }
            _ => {}
        }
        if self.index.contains_key(spec) {
            return Ok(vec![spec.to_owned()]);
        }
        let matches: Vec<&String> = self.index.keys().filter(|id| id.starts_with(spec)).collect();
        match matches.as_slice() {
            [one] => Ok(vec![(*one).clone()]),
            [] => Err(format!(
                "no revision '{spec}': give a revision id (or a unique prefix), heads, head or base; the heads are {}",
                self.heads.join(", ")
            )),
            many => Err(format!(
                "'{spec}' is the start of {} revisions ({}): give more of it",
                many.len(),
                many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// Two rows of which one descends from the other, `(ancestor, descendant)`: a version table
    /// Alembic did not write (it keeps only the tips).
    pub fn overlapping(&self, rows: &[String]) -> Option<(String, String)> {
        rows.iter().find_map(|newer| {
            let below = self.ancestors([newer]);
            rows.iter()
                .find(|older| *older != newer && below.contains(*older))
                .map(|older| (older.clone(), newer.clone()))
        })
    }

    /// Where the database stands, given the rows of `alembic_version`.
    pub fn locate(&self, rows: &[String]) -> Position {
        let rows: Vec<String> = {
            let mut r = rows.to_vec();
            r.sort();
            r.dedup();
            r
        };
        let missing: Vec<String> = rows.iter().filter(|r| !self.index.contains_key(*r)).cloned().collect();
        let applied = self.ancestors(&rows);
        // Every head applied, itself or as an ancestor: a head that another revision
        // `depends_on` is applied with it and has no row of its own (Alembic keeps only the
        // dependent one), so comparing the rows with the heads would never match.
        let at_heads = missing.is_empty() && self.heads.iter().all(|h| applied.contains(h));
        Position { rows, missing, applied, at_heads }
    }
}

/// The database's place in the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The rows of `alembic_version`, sorted.
    pub rows: Vec<String>,
    /// Rows no local file has: a newer release applied them, or a file was lost.
    pub missing: Vec<String>,
    pub applied: BTreeSet<String>,
    /// Every head is applied.
    pub at_heads: bool,
}

impl Position {
    /// Local revisions not applied, parents first.
    pub fn pending<'g>(&self, graph: &'g Graph) -> Vec<&'g Revision> {
        graph.revisions.iter().filter(|r| !self.applied.contains(&r.id)).collect()
    }

    /// The first pending revision whose parents are all applied: where an upgrade goes next (or
    /// where it stopped).
    pub fn next<'g>(&self, graph: &'g Graph) -> Option<&'g Revision> {
        self.pending(graph).into_iter().find(|r| r.parents().all(|p| self.applied.contains(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(id: &str, down: &[&str]) -> Revision {
        Revision {
            id: id.into(),
            down: down.iter().map(|s| s.to_string()).collect(),
            depends_on: Vec::new(),
            branch_labels: Vec::new(),
            message: format!("m{id}"),
            file: PathBuf::from(format!("versions/{id}.py")),
        }
    }

    /// 1 ← 2 ← 3a, 2 ← 3b (label reports), 3a + 3b ← 4 (merge) ← 5.
    fn merged() -> Vec<Revision> {
        let mut b = rev("3b", &["2"]);
        b.branch_labels = vec!["reports".into()];
        vec![rev("5", &["4"]), rev("1", &[]), rev("2", &["1"]), rev("3a", &["2"]), b, rev("4", &["3a", "3b"])]
    }

    fn ids(revs: &[&Revision]) -> Vec<String> {
        revs.iter().map(|r| r.id.clone()).collect()
    }

    #[test]
    fn order_is_parents_first_and_the_merge_has_one_head() {
        let g = Graph::new(merged()).unwrap();
        let order: Vec<&str> = g.revisions.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(order, ["1", "2", "3a", "3b", "4", "5"]);
        assert_eq!(g.heads, ["5"]);
    }

    #[test]
    fn position_reads_applied_pending_and_next() {
        let g = Graph::new(merged()).unwrap();
        let fresh = g.locate(&[]);
        assert!(!fresh.at_heads);
        assert_eq!(fresh.next(&g).unwrap().id, "1");
        let half = g.locate(&["3a".into()]);
        assert_eq!(ids(&half.pending(&g)), ["3b", "4", "5"]);
        assert_eq!(half.next(&g).unwrap().id, "3b");
        let both = g.locate(&["3b".into(), "3a".into()]);
        assert_eq!(both.next(&g).unwrap().id, "4");
        let done = g.locate(&["5".into()]);
        assert!(done.at_heads && done.pending(&g).is_empty() && done.next(&g).is_none());
    }

    #[test]
    fn unknown_rows_are_missing_and_not_at_heads() {
        let g = Graph::new(merged()).unwrap();
        let p = g.locate(&["5".into(), "zz".into()]);
        assert_eq!(p.missing, ["zz"]);
        assert!(!p.at_heads);
    }

    #[test]
    fn two_unmerged_branches_are_two_heads() {
        let g = Graph::new(vec![rev("1", &[]), rev("2", &["1"]), rev("x", &["1"])]).unwrap();
        assert_eq!(g.heads, ["2", "x"]);
        assert!(g.locate(&["2".into(), "x".into()]).at_heads);
        assert!(!g.locate(&["2".into()]).at_heads);
        assert!(g.resolve("head").unwrap_err().contains("2 heads"));
        assert_eq!(g.resolve("heads").unwrap(), ["2", "x"]);
    }

    #[test]
    fn depends_on_orders_but_does_not_merge() {
        let mut b = rev("b1", &[]);
        b.branch_labels = vec!["audit".into()];
        let mut a2 = rev("a2", &["a1"]);
        a2.depends_on = vec!["audit".into()];
        let g = Graph::new(vec![a2, rev("a1", &[]), b]).unwrap();
        assert_eq!(g.get("a2").unwrap().depends_on, ["b1"]);
        let order: Vec<&str> = g.revisions.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(order, ["a1", "b1", "a2"]);
        // b1 is a dependency of a2, not its down revision: still a head.
        assert_eq!(g.heads, ["b1", "a2"]);
        // Alembic keeps the single row a2 once both are applied: that is at the heads.
        let p = g.locate(&["a2".into()]);
        assert!(p.applied.contains("b1") && p.at_heads);
        assert!(!g.locate(&["b1".into()]).at_heads && !g.locate(&["a1".into(), "b1".into()]).at_heads);
    }

    #[test]
    fn bad_graphs_are_refused_naming_the_files() {
        let dup = Graph::new(vec![rev("1", &[]), rev("1", &[])]).unwrap_err();
        assert!(dup.contains("declared twice"), "{dup}");
        let orphan = Graph::new(vec![rev("2", &["1"])]).unwrap_err();
        assert!(orphan.contains("versions/2.py") && orphan.contains("'1'"), "{orphan}");
        let cycle = Graph::new(vec![rev("1", &[]), rev("a", &["b"]), rev("b", &["a"])]).unwrap_err();
        assert!(cycle.contains("cycle") && cycle.contains("a (") && !cycle.contains("1 ("), "{cycle}");
        let own = Graph::new(vec![rev("a", &["a"])]).unwrap_err();
        assert!(own.contains("itself"), "{own}");
        let illegal = Graph::new(vec![rev("a-b", &[])]).unwrap_err();
        assert!(illegal.contains("a-b"), "{illegal}");
        let mut dep = rev("2", &[]);
        dep.depends_on = vec!["nope".into()];
        assert!(Graph::new(vec![dep]).unwrap_err().contains("nope"));
    }

    #[test]
    fn rows_that_overlap_are_found() {
        let g = Graph::new(merged()).unwrap();
        let last = g.revisions.last().unwrap().id.clone();
        let first = g.revisions[0].id.clone();
        assert_eq!(g.overlapping(&[first.clone(), last.clone()]), Some((first, last.clone())));
        assert_eq!(g.overlapping(&[last]), None);
    }

    #[test]
    fn branch_labels_and_branch_heads_resolve() {
        let mut b = rev("b1", &["a1"]);
        b.branch_labels = vec!["reports".into()];
        let g = Graph::new(vec![rev("a1", &[]), b, rev("b2", &["b1"]), rev("c1", &["a1"])]).unwrap();
        assert_eq!(g.resolve("reports").unwrap(), ["b1"]);
        assert_eq!(g.resolve("reports@head").unwrap(), ["b2"]);
        assert!(g.resolve("a1@head").unwrap_err().contains("2 heads"));
        assert!(g.resolve("").unwrap_err().contains("empty"));
        let mut clash = rev("x", &[]);
        clash.branch_labels = vec!["a1".into()];
        assert!(Graph::new(vec![rev("a1", &[]), clash]).unwrap_err().contains("also a revision id"));
    }

    #[test]
    fn revisions_resolve_by_prefix() {
        let g = Graph::new(vec![rev("ab12", &[]), rev("ab34", &["ab12"]), rev("cd", &["ab34"])]).unwrap();
        assert_eq!(g.resolve("c").unwrap(), ["cd"]);
        assert_eq!(g.resolve("head").unwrap(), ["cd"]);
        assert!(g.resolve("base").unwrap().is_empty());
        assert!(g.resolve("ab").unwrap_err().contains("2 revisions"));
        assert!(g.resolve("zz").unwrap_err().contains("heads are cd"));
    }
}
