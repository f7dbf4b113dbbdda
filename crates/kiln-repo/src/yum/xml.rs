//! Writing XML: escaping untrusted text for element content and attribute
//! values (dropping what XML 1.0 cannot carry), and the small elements the
//! primary, filelists and other documents are made of.

use std::fmt::Write as _;

use crate::yum::rpmhead::{FileKind, PkgFile};

pub(super) const XML_DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
pub(super) const NS_COMMON: &str = "http://linux.duke.edu/metadata/common";
pub(super) const NS_RPM: &str = "http://linux.duke.edu/metadata/rpm";
pub(super) const NS_FILELISTS: &str = "http://linux.duke.edu/metadata/filelists";
pub(super) const NS_OTHER: &str = "http://linux.duke.edu/metadata/other";
pub(super) const NS_REPO: &str = "http://linux.duke.edu/metadata/repo";

/// Whether XML 1.0 can carry `c` at all (even as a character reference).
fn xml_char_ok(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Appends `s` escaped for use between tags (`attr == false`) or inside a
/// double-quoted attribute value (`attr == true`). Characters XML cannot carry
/// are dropped; in attributes, tabs and line breaks become character
/// references so that attribute-value normalisation keeps them.
fn push_escaped(out: &mut String, s: &str, attr: bool) {
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let rep = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' if attr => "&quot;",
            '\r' => "&#13;",
            '\n' if attr => "&#10;",
            '\t' if attr => "&#9;",
            c if !xml_char_ok(c) => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(rep);
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
}

pub(super) fn push_text(out: &mut String, s: &str) {
    push_escaped(out, s, false);
}

pub(super) fn push_attr(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    push_escaped(out, value, true);
    out.push('"');
}

/// `<name>text</name>` (or `<name/>` when empty) on its own line.
pub(super) fn push_text_element(out: &mut String, indent: &str, name: &str, text: &str) {
    out.push_str(indent);
    out.push('<');
    out.push_str(name);
    if text.is_empty() {
        out.push_str("/>\n");
    } else {
        out.push('>');
        push_text(out, text);
        out.push_str("</");
        out.push_str(name);
        out.push_str(">\n");
    }
}

pub(super) fn push_num(out: &mut String, n: u64) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{n}");
}

pub(super) fn push_version(out: &mut String, indent: &str, epoch: u32, version: &str, release: &str) {
    out.push_str(indent);
    out.push_str("<version epoch=\"");
    push_num(out, u64::from(epoch));
    out.push('"');
    push_attr(out, "ver", version);
    push_attr(out, "rel", release);
    out.push_str("/>\n");
}

/// `<file>`, `<file type="dir">` or `<file type="ghost">`.
pub(super) fn push_file(out: &mut String, indent: &str, file: &PkgFile) {
    out.push_str(indent);
    out.push_str("<file");
    match file.kind {
        FileKind::Plain => {}
        FileKind::Dir => out.push_str(" type=\"dir\""),
        FileKind::Ghost => out.push_str(" type=\"ghost\""),
    }
    out.push('>');
    push_text(out, &file.path);
    out.push_str("</file>\n");
}

#[cfg(test)]
pub(super) mod tests {
    // Escaping is tested on whole rendered documents (in `repodata`); this is
    // the checker those tests parse them with.

    /// Parses `xml` completely (checking that it is well-formed) and returns the text
    /// of every element and attribute value, unescaped, for content checks.
    pub(crate) fn well_formed(xml: &str) -> Vec<String> {
        use quick_xml::events::Event;
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut values = Vec::new();
        let mut depth = 0i32;
        loop {
            match reader.read_event().expect("well-formed XML") {
                Event::Start(e) => {
                    depth += 1;
                    values.extend(
                        e.attributes()
                            .map(|a| a.expect("attribute").unescape_value().expect("attribute value").into_owned()),
                    );
                }
                Event::Empty(e) => {
                    values.extend(
                        e.attributes()
                            .map(|a| a.expect("attribute").unescape_value().expect("attribute value").into_owned()),
                    );
                }
                Event::End(_) => depth -= 1,
                Event::Text(t) => values.push(t.decode().expect("text decodes").into_owned()),
                Event::GeneralRef(r) => {
                    let c = match r.decode().expect("entity decodes").as_ref() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        other => panic!("unexpected entity {other}"),
                    };
                    values.push(c.to_owned());
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(depth, 0, "unbalanced XML");
        values
    }
}
