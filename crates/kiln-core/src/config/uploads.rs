//! `[uploads]`: who may sign source uploads, and the incoming directory
//! the master takes dropped uploads from.

use super::model::UploadsSection;
use crate::toml_reader::{Reader, Tbl};
use std::time::Duration;

const UPLOADS_KEYS: &[&str] =
    &["keyring", "require_signature", "incoming_dir", "incoming_quiet", "incoming_wait", "mail"];

pub(super) fn read_uploads(r: &mut Reader<'_>, item: Option<&toml_edit::Item>) -> UploadsSection {
    let mut u = UploadsSection::default();
    let Some(item) = item else { return u };
    let span = item.span();
    let Some(t) = item.as_table_like() else {
        r.err(&span, "[uploads] must be a table");
        return u;
    };
    let tbl = Tbl { t, span: &span };
    r.check_keys(tbl, UPLOADS_KEYS, "[uploads]");
    u.keyring = r.string(tbl, "keyring", "[uploads]").and_then(|(k, kspan)| {
        if k.trim().is_empty() {
            r.err(&kspan, "`keyring` of [uploads] must name an armored OpenPGP public keyring file");
            return None;
        }
        Some(k)
    });
    u.require_signature = r.boolean(tbl, "require_signature", "[uploads]").unwrap_or(false);
    // Without keys no upload could be accepted; say so rather than refuse every one.
    if u.require_signature && u.keyring.is_none() && !t.contains_key("keyring") {
        r.err(&span, "`require_signature` of [uploads] needs a `keyring` of the keys that may sign uploads");
    }
    u.incoming_dir = r.string(tbl, "incoming_dir", "[uploads]").and_then(|(d, dspan)| {
        if d.trim().is_empty() {
            r.err(&dspan, "`incoming_dir` of [uploads] must name a directory");
            return None;
        }
        Some(d)
    });
    if let Some(d) = r.duration(tbl, "incoming_quiet", "[uploads]") {
        u.incoming_quiet = d.max(Duration::from_millis(100));
    }
    if let Some(d) = r.duration(tbl, "incoming_wait", "[uploads]") {
        u.incoming_wait = d;
    }
    for (addr, aspan) in r.string_list(tbl, "mail", "[uploads]").unwrap_or_default() {
        if crate::perm::check_email(&addr).is_ok() {
            u.mail.push(addr);
        } else {
            r.err(&aspan, format!("`mail` of [uploads]: {addr:?} is not a mail address"));
        }
    }
    u
}
