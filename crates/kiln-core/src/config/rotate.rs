//! `kiln key rotate` as an edit of the config text: the channel's `key`
//! becomes the new file and its old key moves to `previous_key` with the
//! time it keeps signing. Comments and layout elsewhere stay as written.

use toml_edit::{DocumentMut, InlineTable, Item, Value};

/// A rotation to write into a channel's config.
#[derive(Debug, Clone)]
pub struct Rotation<'a> {
    pub channel: &'a str,
    /// The new key file, as the config should name it.
    pub new_key: &'a str,
    /// The new key's passphrase file, as the config should name it.
    pub new_passphrase_file: Option<&'a str>,
    /// The key it replaces, as the config should name it (the configured
    /// file, or the one the master generated under its data dir).
    pub old_key: &'a str,
    /// Unix seconds until which the old key signs too.
    pub until: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotateError {
    #[error("the config is not valid TOML: {0}")]
    NotToml(String),
    #[error(
        "the config has no [[channel]] tables (it uses kiln's default channels): write the channels out first, \
         e.g. [[channel]] name = \"{0}\""
    )]
    NoChannelTables(String),
    #[error("the config has no [[channel]] named {0:?}")]
    NoSuchChannel(String),
}

/// `text` with `r` applied to its channel.
pub fn rotate_channel_key(text: &str, r: &Rotation<'_>) -> Result<String, RotateError> {
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| RotateError::NotToml(e.to_string()))?;
    let channels = doc
        .get_mut("channel")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| RotateError::NoChannelTables(r.channel.to_string()))?;
    let table = channels
        .iter_mut()
        .find(|t| t.get("name").and_then(Item::as_str) == Some(r.channel))
        .ok_or_else(|| RotateError::NoSuchChannel(r.channel.to_string()))?;
    // The old key's passphrase, in the table form `previous_key` takes.
    let old_passphrase: Option<InlineTable> = match (table.remove("passphrase_file"), table.remove("passphrase")) {
        (Some(file), _) => file.as_str().map(|f| {
            let mut t = InlineTable::new();
            t.insert("file", f.into());
            t
        }),
        (None, Some(item)) => item.as_table_like().map(|t| {
            let mut inline = InlineTable::new();
            for (k, v) in t.iter() {
                if let Some(v) = v.as_value() {
                    inline.insert(k, v.clone());
                }
            }
            inline
        }),
        (None, None) => None,
    };
    // A generated key's kind no longer applies once `key` names a file.
    table.remove("key_type");
    table.remove("previous_key");
    table.insert("key", toml_edit::value(r.new_key));
    if let Some(f) = r.new_passphrase_file {
        let mut t = InlineTable::new();
        t.insert("file", f.into());
        table.insert("passphrase", toml_edit::value(t));
    }
    let mut previous = InlineTable::new();
    previous.insert("key", r.old_key.into());
    if let Some(p) = old_passphrase {
        previous.insert("passphrase", Value::InlineTable(p));
    }
    previous.insert("until", until_text(r.until).into());
    table.insert("previous_key", toml_edit::value(previous));
    Ok(doc.to_string())
}

/// `2027-01-15T12:00:00Z`, as [`crate::date::parse_date`] reads it.
fn until_text(at: u64) -> String {
    let shown = crate::date::format_utc(at); // "YYYY-MM-DD HH:MM UTC"
    let (day, rest) = shown.split_once(' ').unwrap_or((&shown, "00:00 UTC"));
    let hm = rest.trim_end_matches(" UTC");
    format!("{day}T{hm}:{:02}Z", at % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"# our farm
[master]
data_dir = "data"

[[channel]]
name = "dev"   # nightlies
accepts = "nightly"

[[channel]]
name = "stable"
key = "keys/stable-2025.asc"
passphrase = { file = "secrets/stable-2025.pass" }
accepts = "release"
"#;

    fn rotation(until: u64) -> Rotation<'static> {
        Rotation {
            channel: "stable",
            new_key: "keys/stable-2027.asc",
            new_passphrase_file: Some("secrets/stable-2027.pass"),
            old_key: "keys/stable-2025.asc",
            until,
        }
    }

    #[test]
    fn the_old_key_moves_to_previous_key_and_the_rest_stays_as_written() {
        let until = crate::date::parse_date("2027-01-15T12:30:05Z").expect("date");
        let text = rotate_channel_key(CONFIG, &rotation(until)).expect("rotate");
        assert!(text.starts_with("# our farm\n[master]\ndata_dir = \"data\"\n"), "{text}");
        assert!(text.contains("name = \"dev\"   # nightlies"), "{text}");
        let cfg = crate::config::parse(&text).expect("the edited config is valid");
        let stable = cfg.channel("stable").expect("stable");
        assert_eq!(stable.key.as_deref(), Some("keys/stable-2027.asc"));
        assert_eq!(stable.passphrase, Some(crate::config::SecretRef::File("secrets/stable-2027.pass".into())));
        let previous = stable.previous_key.as_ref().expect("previous key");
        assert_eq!(previous.key, "keys/stable-2025.asc");
        assert_eq!(previous.passphrase, Some(crate::config::SecretRef::File("secrets/stable-2025.pass".into())));
        assert_eq!(previous.until, until);
        assert!(previous.in_effect(until - 1) && !previous.in_effect(until));
    }

    #[test]
    fn a_generated_key_rotates_and_key_type_goes() {
        let text = CONFIG.replace("[[channel]]\nname = \"dev\"", "[[channel]]\nname = \"dev\"\nkey_type = \"ed25519\"");
        let r = Rotation {
            channel: "dev",
            new_key: "/etc/kiln/dev.asc",
            new_passphrase_file: None,
            old_key: "data/keys/dev.asc",
            until: 86400,
        };
        let out = rotate_channel_key(&text, &r).expect("rotate");
        let cfg = crate::config::parse(&out).expect("valid");
        let dev = cfg.channel("dev").expect("dev");
        assert_eq!(dev.key.as_deref(), Some("/etc/kiln/dev.asc"));
        assert_eq!(dev.passphrase, None);
        assert_eq!(
            dev.previous_key.as_ref().map(|p| (p.key.as_str(), p.passphrase.clone(), p.until)),
            Some(("data/keys/dev.asc", None, 86400))
        );
    }

    #[test]
    fn what_cannot_be_edited_is_named() {
        assert_eq!(rotate_channel_key("[master]\n", &rotation(1)), Err(RotateError::NoChannelTables("stable".into())));
        assert_eq!(
            rotate_channel_key(&CONFIG.replace("\"stable\"", "\"main\""), &rotation(1)),
            Err(RotateError::NoSuchChannel("stable".into()))
        );
        assert!(matches!(rotate_channel_key("[[channel]\n", &rotation(1)), Err(RotateError::NotToml(_))));
    }
}
