//! Whether a master may use, or migrate, the database's schema when other
//! masters share it: a kiln never runs against a schema newer than it
//! knows, and never migrates one under a live master that only knows an
//! older one (that master would then write rows the new schema reads
//! wrong, or fail on columns it never heard of).

/// Another master sharing the database, as its lease says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMaster {
    pub id: String,
    /// The schema version its kiln knows.
    pub knows: i64,
}

/// What may be done with the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaPlan {
    /// It is this kiln's version: use it.
    Use,
    /// Migrate from `from` to `to`.
    Migrate { from: i64, to: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaRefusal {
    #[error(
        "the database's schema is version {found}, newer than this kiln knows ({knows}): a newer kiln migrated it; \
         run that version (or newer) instead"
    )]
    Newer { found: i64, knows: i64 },
    #[error(
        "cannot migrate the database to schema version {to} while {} still run(s) against it knowing only an older \
         version; stop {} first (or upgrade every master together)",
        list(.masters), if .masters.len() == 1 { "it" } else { "them" }
    )]
    OlderMastersLive { to: i64, masters: Vec<LiveMaster> },
}

fn list(masters: &[LiveMaster]) -> String {
    let names: Vec<String> = masters.iter().map(|m| format!("master {} (schema {})", m.id, m.knows)).collect();
    names.join(", ")
}

/// The plan for a kiln knowing schema `knows`, finding `found` in the
/// database, with `live` other masters holding leases there.
pub fn plan(found: i64, knows: i64, live: &[LiveMaster]) -> Result<SchemaPlan, SchemaRefusal> {
    if found > knows {
        return Err(SchemaRefusal::Newer { found, knows });
    }
    if found == knows {
        return Ok(SchemaPlan::Use);
    }
    let older: Vec<LiveMaster> = live.iter().filter(|m| m.knows < knows).cloned().collect();
    if !older.is_empty() {
        return Err(SchemaRefusal::OlderMastersLive { to: knows, masters: older });
    }
    Ok(SchemaPlan::Migrate { from: found, to: knows })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, knows: i64) -> LiveMaster {
        LiveMaster { id: id.into(), knows }
    }

    #[test]
    fn a_kiln_migrates_only_what_no_live_master_still_needs() {
        assert_eq!(plan(12, 12, &[m("a", 11)]), Ok(SchemaPlan::Use));
        assert_eq!(plan(10, 12, &[]), Ok(SchemaPlan::Migrate { from: 10, to: 12 }));
        assert_eq!(plan(11, 12, &[m("a", 12)]), Ok(SchemaPlan::Migrate { from: 11, to: 12 }));
        let refused = plan(11, 12, &[m("a", 11), m("b", 12)]).expect_err("an older master is live");
        assert_eq!(refused, SchemaRefusal::OlderMastersLive { to: 12, masters: vec![m("a", 11)] });
        assert!(refused.to_string().contains("master a (schema 11)"), "{refused}");
        let newer = plan(13, 12, &[]).expect_err("newer");
        assert_eq!(newer, SchemaRefusal::Newer { found: 13, knows: 12 });
        assert!(newer.to_string().contains("newer than this kiln knows (12)"), "{newer}");
    }
}
