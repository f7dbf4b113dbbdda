//! debsig-style signatures inside `.deb` files: an `_gpgorigin` ar member
//! holding a detached OpenPGP signature over the contents of
//! `debian-binary`, `control.tar.*` and `data.tar.*`, in that order, which
//! is what `debsig-verify` checks against its policies.

use crate::deb::ar_members;
use crate::fsio::write_atomic;
use crate::key::SigningKey;
use crate::{RepoError, Result};
use std::path::Path;

/// The member name debsig-verify reads for the origin's signature.
const ORIGIN: &str = "_gpgorigin";

/// Signs the `.deb` at `src` with `key` into `dest` (atomically, mode 0644);
/// an earlier origin signature is replaced.
pub fn sign_deb(src: &Path, dest: &Path, key: &SigningKey) -> Result<()> {
    let deb = std::fs::read(src).map_err(|e| RepoError::io(src, e))?;
    let members = ar_members(&deb).map_err(|e| RepoError::bad(src, e))?;
    let mut signed = Vec::new();
    let mut out = b"!<arch>\n".to_vec();
    for m in members.iter().filter(|m| m.name != ORIGIN) {
        if m.name == "debian-binary" || m.name.starts_with("control.tar") || m.name.starts_with("data.tar") {
            signed.extend_from_slice(m.data);
        }
        out.extend_from_slice(m.header);
        out.extend_from_slice(m.data);
        if m.data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    let sig = key.detached(&signed)?;
    let header = format!("{ORIGIN:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n", 0, 0, 0, 100644, sig.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(sig.as_bytes());
    if sig.len() % 2 == 1 {
        out.push(b'\n');
    }
    write_atomic(dest, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_signature_covers_the_three_members_and_replaces_an_old_one() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut deb = b"!<arch>\n".to_vec();
        for (name, data) in [("debian-binary", &b"2.0\n"[..]), ("control.tar.gz", b"CTRL"), ("data.tar.xz", b"DATA!")] {
            deb.extend_from_slice(
                format!("{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n", 0, 0, 0, 100644, data.len()).as_bytes(),
            );
            deb.extend_from_slice(data);
            if data.len() % 2 == 1 {
                deb.push(b'\n');
            }
        }
        let src = dir.path().join("a.deb");
        std::fs::write(&src, &deb).expect("write");
        let key =
            SigningKey::generate("t <t@localhost>", None, kiln_core::channel::KeyAlgorithm::Ed25519).expect("key");
        let once = dir.path().join("once.deb");
        sign_deb(&src, &once, &key).expect("sign");
        let twice = dir.path().join("twice.deb");
        sign_deb(&once, &twice, &key).expect("sign again");
        let bytes = std::fs::read(&twice).expect("read");
        let ms = ar_members(&bytes).expect("members");
        let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["debian-binary", "control.tar.gz", "data.tar.xz", "_gpgorigin"]);
        let sig = std::str::from_utf8(ms[3].data).expect("armored");
        let public = key.public_armored().expect("pub");
        let (public, _) =
            <pgp::composed::SignedPublicKey as pgp::composed::Deserializable>::from_string(&public).expect("pub");
        let (sig, _) =
            <pgp::composed::DetachedSignature as pgp::composed::Deserializable>::from_string(sig).expect("sig");
        sig.verify(&public, b"2.0\nCTRLDATA!").expect("covers the three members in order");
    }
}
