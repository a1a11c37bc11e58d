//! `--user USER[:GROUP]`: the identity the app runs as, like gosu and su-exec.

use std::ffi::CString;

use nix::unistd::{Gid, Group, Uid};

use crate::error::Error;

/// A resolved identity. Resolved before the fork, since looking up /etc/passwd is not safe
/// between fork and exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: Uid,
    pub gid: Gid,
    /// Supplementary groups: the user's groups from /etc/group for a name, none for bare ids.
    pub groups: Vec<Gid>,
    /// For messages.
    pub spec: String,
}

impl User {
    /// Parses `name`, `uid`, `name:group` or `uid:gid`.
    pub fn parse(spec: &str) -> Result<User, Error> {
        let bad = |why: String| Error::usage(format!("--user '{spec}': {why}"));
        let (user_part, group_part) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let (uid, mut gid, name) = if let Ok(id) = user_part.parse::<u32>() {
            let entry = nix::unistd::User::from_uid(Uid::from_raw(id)).ok().flatten();
            (Uid::from_raw(id), entry.as_ref().map_or(Gid::from_raw(id), |u| u.gid), entry.map(|u| u.name))
        } else {
            let entry = nix::unistd::User::from_name(user_part)
                .map_err(|e| bad(format!("cannot read the user database: {e}")))?
                .ok_or_else(|| {
                    bad(format!("no user '{user_part}' in /etc/passwd: use a known name or numeric ids"))
                })?;
            (entry.uid, entry.gid, Some(entry.name))
        };
        if let Some(g) = group_part {
            gid = if let Ok(id) = g.parse::<u32>() {
                Gid::from_raw(id)
            } else {
                Group::from_name(g)
                    .map_err(|e| bad(format!("cannot read the group database: {e}")))?
                    .ok_or_else(|| bad(format!("no group '{g}' in /etc/group")))?
                    .gid
            };
        }
        // Supplementary groups only for a user given by name; `65534:65534` means exactly that.
        let groups = match (&name, user_part.parse::<u32>().is_err()) {
            (Some(name), true) => {
                let c = CString::new(name.as_str()).map_err(|_| bad("a NUL byte in the name".into()))?;
                nix::unistd::getgrouplist(&c, gid).map_err(|e| bad(format!("cannot list its groups: {e}")))?
            }
            _ => vec![gid],
        };
        if !Uid::effective().is_root() {
            return Err(bad(format!(
                "switching users needs root, and preflight runs as uid {}: drop --user, or start as root",
                Uid::effective()
            )));
        }
        Ok(User { uid, gid, groups, spec: spec.to_owned() })
    }

    /// Switches to this identity. Called between fork and exec (or right before exec): only
    /// async-signal-safe system calls.
    pub fn switch(&self) -> std::io::Result<()> {
        nix::unistd::setgroups(&self.groups)?;
        nix::unistd::setgid(self.gid)?;
        nix::unistd::setuid(self.uid)?;
        Ok(())
    }
}
