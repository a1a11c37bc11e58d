//! Reading an `alembic.ini` the way Alembic does (Python's `ConfigParser` with basic
//! interpolation), for the three keys that say where the revision files are:
//! `script_location`, `version_locations` and the separator it is split on.
//!
//! What `ConfigParser` does that matters here: keys are case-insensitive, `=` or `:` separates a
//! key from its value, lines starting with `#` or `;` are comments, an indented line continues the
//! previous value, `[DEFAULT]` values are seen from every section, and `%(name)s` is replaced by
//! another key's value (`%%` is a literal `%`). Alembic adds `here`, the ini file's directory.
//! Relative paths are relative to the working directory, not to the file: Alembic opens them as
//! given, and so do we.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One section's keys, with the defaults folded in.
#[derive(Debug, Clone, Default)]
pub struct Section {
    values: BTreeMap<String, String>,
}

/// Why an ini file could not be read; the caller adds the file's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniError(pub String);

/// Parses `text` and returns `section` (e.g. `alembic`), or `None` when the file has no such
/// section. `here` is the ini file's directory, as Alembic sets it.
pub fn section(text: &str, name: &str, here: &Path) -> Result<Option<Section>, IniError> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    // The key whose value an indented line continues, and that key's indentation.
    let mut last: Option<(String, usize)> = None;
    for (n, raw) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let line = raw.trim_end();
        let stripped = line.trim_start();
        let indent = line.len() - stripped.len();
        if stripped.is_empty() || stripped.starts_with('#') || stripped.starts_with(';') {
            continue;
        }
        if let (Some((key, key_indent)), Some(section)) = (&last, &current)
            && indent > *key_indent
        {
            let value =
                sections.get_mut(section).and_then(|s| s.get_mut(key)).expect("last key was inserted");
            if !value.is_empty() {
                value.push('\n');
            }
            value.push_str(stripped);
            continue;
        }
        if let Some(rest) = stripped.strip_prefix('[') {
            let Some(title) = rest.strip_suffix(']') else {
                return Err(IniError(format!("line {}: a section header must end with ']'", n + 1)));
            };
            // Python's configparser (strict, as Alembic uses it) refuses repeats.
            if sections.insert(title.to_owned(), BTreeMap::new()).is_some() {
                return Err(IniError(format!("line {}: section [{title}] appears twice; merge them", n + 1)));
            }
            current = Some(title.to_owned());
            last = None;
            continue;
        }
        let Some(section) = &current else {
            return Err(IniError(format!("line {}: a key before any [section]", n + 1)));
        };
        let split = stripped.find(['=', ':']).ok_or_else(|| {
            IniError(format!("line {}: expected 'key = value', found '{}'", n + 1, clip(stripped)))
        })?;
        let key = stripped[..split].trim().to_lowercase();
        let value = stripped[split + 1..].trim().to_owned();
        if sections.get_mut(section).expect("section was inserted").insert(key.clone(), value).is_some() {
            return Err(IniError(format!(
                "line {}: [{section}] sets {key} twice, which Alembic refuses; keep one",
                n + 1
            )));
        }
        last = Some((key, indent));
    }
    let mut values = sections.get("DEFAULT").cloned().unwrap_or_default();
    values.entry("here".into()).or_insert_with(|| here.display().to_string());
    let Some(own) = sections.get(name) else { return Ok(None) };
    values.extend(own.clone());
    Ok(Some(Section { values }))
}

fn clip(s: &str) -> String {
    s.chars().take(60).collect()
}

impl Section {
    /// The interpolated value of `key`, if set.
    pub fn get(&self, key: &str) -> Result<Option<String>, IniError> {
        match self.values.get(key) {
            None => Ok(None),
            Some(raw) => self.interpolate(key, raw, 0).map(Some),
        }
    }

    /// A boolean as `ConfigParser.getboolean` reads it.
    /// A boolean as Alembic reads it (`get_alembic_boolean_option`): exactly `true` is true,
    /// anything else, `True` and `yes` included, is false. Reading more would make preflight
    /// see revisions Alembic does not.
    pub fn boolean(&self, key: &str) -> Result<bool, IniError> {
        Ok(self.get(key)?.is_some_and(|v| v == "true"))
    }

    fn interpolate(&self, key: &str, raw: &str, depth: usize) -> Result<String, IniError> {
        // ConfigParser's own limit.
        if depth > 10 {
            return Err(IniError(format!("{key}: %(…)s references nest too deep (a loop?)")));
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                out.push('%');
                rest = tail;
            } else if let Some(inner) = after.strip_prefix('(')
                && let Some(close) = inner.find(")s")
            {
                let name = inner[..close].to_lowercase();
                let value = self
                    .values
                    .get(&name)
                    .ok_or_else(|| IniError(format!("{key}: %({name})s names a key that is not set")))?;
                out.push_str(&self.interpolate(&name, value, depth + 1)?);
                rest = &inner[close + 2..];
            } else {
                return Err(IniError(format!(
                    "{key}: a lone '%' must be written '%%' (ConfigParser's interpolation)"
                )));
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Splits `version_locations` as Alembic does: on `path_separator` (or the older
/// `version_path_separator`) when one is set, else on spaces and commas.
pub fn split_locations(section: &Section, raw: &str) -> Result<Vec<String>, IniError> {
    let separator = match section.get("path_separator")? {
        Some(s) => Some(s),
        None => section.get("version_path_separator")?,
    };
    let parts: Vec<String> = match separator.as_deref() {
        None => raw.split([' ', ',']).map(str::trim).map(str::to_owned).collect(),
        Some(sep) => {
            let ch = match sep {
                "space" => ' ',
                "newline" => '\n',
                "os" | ":" => ':',
                ";" => ';',
                other => {
                    return Err(IniError(format!(
                        "path_separator = {other} is not one of space, newline, os, ':' or ';'"
                    )));
                }
            };
            raw.split(ch).map(str::trim).map(str::to_owned).collect()
        }
    };
    Ok(parts.into_iter().filter(|p| !p.is_empty()).collect())
}

/// A location as Alembic writes it: a path, or a package resource `package.module:dir`, which
/// we look for below the working directory and `prepend_sys_path` (Alembic would import the
/// package; without Python we can only find it where it sits in the source tree).
pub fn resolve_location(raw: &str, search: &[PathBuf]) -> Result<PathBuf, String> {
    let path = Path::new(raw);
    if path.is_absolute() || !raw.contains(':') {
        return Ok(path.to_path_buf());
    }
    let (package, dir) = raw.split_once(':').expect("contains ':'");
    let relative: PathBuf = package.split('.').collect::<PathBuf>().join(dir);
    search.iter().map(|base| base.join(&relative)).find(|p| p.is_dir()).ok_or_else(|| {
        format!(
            "'{raw}' is a package resource, and no folder {} was found below the working directory \
             or prepend_sys_path: write it as a path (e.g. %(here)s/{})",
            relative.display(),
            relative.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INI: &str = "\
# A comment
[DEFAULT]
base = /srv

[alembic]
Script_Location = %(here)s/migrations
version_locations = %(here)s/migrations/versions
    %(base)s/extra
path_separator = newline
sqlalchemy.url = driver://user:pass@localhost/dbname
pct = 100%%
; another comment
[loggers]
keys = root
";

    fn alembic() -> Section {
        section(INI, "alembic", Path::new("/app")).unwrap().unwrap()
    }

    #[test]
    fn here_defaults_and_continuations_are_interpolated() {
        let s = alembic();
        assert_eq!(s.get("script_location").unwrap().as_deref(), Some("/app/migrations"));
        let raw = s.get("version_locations").unwrap().unwrap();
        assert_eq!(split_locations(&s, &raw).unwrap(), ["/app/migrations/versions", "/srv/extra"]);
        assert_eq!(s.get("pct").unwrap().as_deref(), Some("100%"));
        assert_eq!(s.get("nope").unwrap(), None);
    }

    #[test]
    fn repeated_keys_and_sections_are_refused_as_configparser_does() {
        let key = section("[alembic]\nx = 1\nX = 2\n", "alembic", Path::new("/")).unwrap_err();
        assert!(key.0.contains("sets x twice"), "{key:?}");
        let sec = section("[alembic]\nx = 1\n[alembic]\ny = 2\n", "alembic", Path::new("/")).unwrap_err();
        assert!(sec.0.contains("appears twice"), "{sec:?}");
        let ok = section("[alembic]\nx = 1\n[other]\nx = 2\n", "alembic", Path::new("/")).unwrap().unwrap();
        assert!(ok.boolean("missing").is_ok_and(|b| !b));
    }

    #[test]
    fn a_missing_section_is_none() {
        assert!(section(INI, "other", Path::new("/")).unwrap().is_none());
    }

    #[test]
    fn legacy_locations_split_on_spaces_and_commas() {
        let s = section("[alembic]\nx = 1\n", "alembic", Path::new("/")).unwrap().unwrap();
        assert_eq!(split_locations(&s, "a b,c, d").unwrap(), ["a", "b", "c", "d"]);
        let os = section("[alembic]\npath_separator = os\n", "alembic", Path::new("/")).unwrap().unwrap();
        assert_eq!(split_locations(&os, "a b:c").unwrap(), ["a b", "c"]);
    }

    #[test]
    fn bad_interpolation_and_syntax_are_errors() {
        let s = section("[alembic]\na = %(nope)s\nb = 5%\n", "alembic", Path::new("/")).unwrap().unwrap();
        assert!(s.get("a").unwrap_err().0.contains("nope"));
        assert!(s.get("b").unwrap_err().0.contains("%%"));
        let loop_ = section("[alembic]\na = %(b)s\nb = %(a)s\n", "alembic", Path::new("/")).unwrap().unwrap();
        assert!(loop_.get("a").is_err());
        assert!(section("key = 1\n", "alembic", Path::new("/")).is_err());
        assert!(section("[alembic\n", "alembic", Path::new("/")).is_err());
    }

    #[test]
    fn package_resources_are_found_in_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("myapp/db/migrations")).unwrap();
        let found = resolve_location("myapp.db:migrations", &[dir.path().to_path_buf()]).unwrap();
        assert_eq!(found, dir.path().join("myapp/db/migrations"));
        assert!(resolve_location("other:migrations", &[dir.path().to_path_buf()]).is_err());
        assert_eq!(resolve_location("/abs:odd", &[]).unwrap(), PathBuf::from("/abs:odd"));
        assert_eq!(resolve_location("rel/dir", &[]).unwrap(), PathBuf::from("rel/dir"));
    }
}
