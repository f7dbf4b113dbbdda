//! Who may do what: Plague's permission set. `own_jobs` submits builds and
//! cancels one's own; `kill_any_job` cancels anyone's; `modify_users`
//! manages users and their tokens; `server_admin` may do everything
//! (repositories, promotion, users, any build).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    OwnJobs,
    KillAnyJob,
    ModifyUsers,
    ServerAdmin,
}

impl Permission {
    pub const ALL: [Permission; 4] =
        [Permission::OwnJobs, Permission::KillAnyJob, Permission::ModifyUsers, Permission::ServerAdmin];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::OwnJobs => "own_jobs",
            Permission::KillAnyJob => "kill_any_job",
            Permission::ModifyUsers => "modify_users",
            Permission::ServerAdmin => "server_admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions(u8);

impl Permissions {
    pub fn none() -> Permissions {
        Permissions(0)
    }

    /// Everything: what the master's admin token carries.
    pub fn admin() -> Permissions {
        Permissions::from_iter([Permission::ServerAdmin])
    }

    /// Parses `own_jobs,kill_any_job` (commas or spaces; empty is none).
    pub fn parse(text: &str) -> Result<Permissions, String> {
        let mut set = Permissions::none();
        for word in text.split([',', ' ']).map(str::trim).filter(|w| !w.is_empty()) {
            let p = Permission::ALL.into_iter().find(|p| p.as_str() == word).ok_or_else(|| {
                format!(
                    "unknown permission {word:?}; known permissions: {}",
                    Permission::ALL.map(Permission::as_str).join(", ")
                )
            })?;
            set.0 |= p.bit();
        }
        Ok(set)
    }

    /// Whether the set holds `p`, directly or through `server_admin`.
    pub fn allows(self, p: Permission) -> bool {
        self.0 & (p.bit() | Permission::ServerAdmin.bit()) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL.into_iter().filter(move |p| self.0 & p.bit() != 0)
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        Permissions(iter.into_iter().fold(0, |acc, p| acc | p.bit()))
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = self.iter().map(Permission::as_str).collect();
        f.write_str(&words.join(","))
    }
}

/// Checks a user's email address as kiln stores it: one address, no
/// spaces or control characters, a local part and a domain.
pub fn check_email(email: &str) -> Result<(), String> {
    let ok = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && domain.contains('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control() || "<>,;\"'\\".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("{email:?} is not an email address like ann@example.org"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_parse_print_and_imply() {
        let p = Permissions::parse("own_jobs, kill_any_job").expect("parses");
        assert!(p.allows(Permission::OwnJobs) && p.allows(Permission::KillAnyJob));
        assert!(!p.allows(Permission::ModifyUsers) && !p.allows(Permission::ServerAdmin));
        assert_eq!(p.to_string(), "own_jobs,kill_any_job");
        assert_eq!(Permissions::parse(&p.to_string()), Ok(p));
        let admin = Permissions::admin();
        assert!(Permission::ALL.iter().all(|q| admin.allows(*q)), "server_admin does everything");
        assert_eq!(Permissions::parse("").map(|p| p.to_string()).as_deref(), Ok(""));
        let err = Permissions::parse("own_jobs,root").expect_err("unknown");
        assert!(err.contains("unknown permission \"root\"") && err.contains("server_admin"), "{err}");
    }

    #[test]
    fn emails_are_checked() {
        assert!(check_email("ann@example.org").is_ok());
        for bad in
            ["", "ann", "@example.org", "ann@", "ann@localhost", "a b@example.org", "a@b@example.org", "a<b@x.org"]
        {
            assert!(check_email(bad).is_err(), "{bad}");
        }
    }
}
