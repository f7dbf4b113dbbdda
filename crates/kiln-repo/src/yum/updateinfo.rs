//! `updateinfo.xml`: a YUM repository's advisories, in the layout
//! createrepo_c's `modifyrepo` and Fedora's/RHEL's repositories serve,
//! which dnf reads for `dnf updateinfo` and `--security`.

use super::xml::{push_attr, push_text_element};
use kiln_core::advisory::Advisory;

/// The document for `advisories`, each listing its packages in one
/// collection named `collection`. Times are UTC.
pub fn render_updateinfo(advisories: &[Advisory], collection: &str) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<updates>\n");
    for a in advisories {
        out.push_str("  <update");
        push_attr(&mut out, "from", "kiln");
        push_attr(&mut out, "status", "stable");
        push_attr(&mut out, "type", a.kind.as_str());
        push_attr(&mut out, "version", "1");
        out.push_str(">\n");
        push_text_element(&mut out, "    ", "id", &a.id);
        push_text_element(&mut out, "    ", "title", &a.title);
        let issued = issued_text(a.issued);
        out.push_str("    <issued");
        push_attr(&mut out, "date", &issued);
        out.push_str("/>\n    <updated");
        push_attr(&mut out, "date", &issued);
        out.push_str("/>\n");
        push_text_element(&mut out, "    ", "rights", "");
        if let Some(s) = &a.severity {
            push_text_element(&mut out, "    ", "severity", s);
        }
        push_text_element(&mut out, "    ", "summary", &a.title);
        push_text_element(&mut out, "    ", "description", &a.description);
        out.push_str("    <references>\n");
        for r in &a.references {
            out.push_str("      <reference");
            push_attr(&mut out, "href", &r.href);
            push_attr(&mut out, "id", &r.id);
            push_attr(&mut out, "type", &r.kind);
            push_attr(&mut out, "title", if r.id.is_empty() { &r.href } else { &r.id });
            out.push_str("/>\n");
        }
        out.push_str("    </references>\n    <pkglist>\n      <collection");
        push_attr(&mut out, "short", collection);
        out.push_str(">\n");
        push_text_element(&mut out, "        ", "name", collection);
        for p in &a.packages {
            out.push_str("        <package");
            push_attr(&mut out, "name", &p.name);
            push_attr(&mut out, "version", &p.version);
            push_attr(&mut out, "release", &p.release);
            push_attr(&mut out, "epoch", &p.epoch.to_string());
            push_attr(&mut out, "arch", &p.arch);
            push_attr(&mut out, "src", "");
            out.push_str(">\n");
            push_text_element(&mut out, "          ", "filename", &p.filename);
            out.push_str("        </package>\n");
        }
        out.push_str("      </collection>\n    </pkglist>\n  </update>\n");
    }
    out.push_str("</updates>\n");
    out
}

/// `YYYY-MM-DD HH:MM:SS`, as advisories date themselves.
fn issued_text(at: u64) -> String {
    let shown = kiln_core::date::format_utc(at); // "YYYY-MM-DD HH:MM UTC"
    format!("{}:{:02}", shown.trim_end_matches(" UTC"), at % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yum::xml::tests::well_formed;
    use kiln_core::advisory::{AdvisoryKind, AdvisoryPackage, Reference};

    #[test]
    fn an_advisory_lists_its_packages_and_references() {
        let a = Advisory {
            id: "KILN-2026-0001".into(),
            kind: AdvisoryKind::Security,
            severity: Some("Important".into()),
            title: "kiln-cafe: milk & <sugar>".into(),
            description: "Fixes it.".into(),
            issued: 1_799_971_200 + 3661,
            references: vec![Reference::from_url("https://www.cve.org/CVERecord?id=CVE-2026-0001").expect("ref")],
            packages: vec![AdvisoryPackage {
                name: "kiln-cafe".into(),
                epoch: 0,
                version: "1.0".into(),
                release: "3".into(),
                arch: "noarch".into(),
                filename: "kiln-cafe-1.0-3.noarch.rpm".into(),
                repository: "el-9-x86_64".into(),
            }],
        };
        let xml = render_updateinfo(&[a], "kiln-stable");
        assert!(well_formed(&xml).concat().contains("kiln-cafe: milk & <sugar>"), "{xml}");
        assert!(xml.contains("<update from=\"kiln\" status=\"stable\" type=\"security\" version=\"1\">"), "{xml}");
        assert!(xml.contains("<issued date=\"2027-01-15 01:01:01\"/>"), "{xml}");
        assert!(xml.contains("<title>kiln-cafe: milk &amp; &lt;sugar&gt;</title>"), "{xml}");
        assert!(xml.contains("type=\"cve\""), "{xml}");
        assert!(
            xml.contains("<package name=\"kiln-cafe\" version=\"1.0\" release=\"3\" epoch=\"0\" arch=\"noarch\""),
            "{xml}"
        );
    }
}
