//! RPM header signatures, made natively with the channel's key so that
//! `rpm -K` and dnf's `gpgcheck=1` accept the package.

use crate::fsio::write_atomic;
use crate::key::SigningKey;
use crate::{RepoError, Result};
use std::path::Path;

/// Signs the RPM at `src` with `key` and writes the signed package to `dest`
/// (atomically, mode 0644). An existing signature by the same key is replaced.
///
/// The package comes from a build, so it is untrusted: its headers are
/// checked by kiln's own reader first ([`crate::yum::check_rpm`]). The `rpm`
/// crate indexes and allocates by the offsets and counts a header claims, so
/// a crafted header made it panic or abort the process on a huge allocation.
pub fn sign_rpm(src: &Path, dest: &Path, key: &SigningKey) -> Result<()> {
    crate::yum::check_rpm(src)?;
    let mut pkg = rpm::Package::open(src).map_err(|e| RepoError::bad(src, e))?;
    pkg.sign(key.rpm_signer()?).map_err(|e| RepoError::Sign(format!("{}: {e}", src.display())))?;
    let mut bytes = Vec::new();
    pkg.write(&mut bytes).map_err(|e| RepoError::Sign(format!("{}: {e}", src.display())))?;
    write_atomic(dest, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yum::rpmhead_tests::{build, Spec};

    #[test]
    fn a_header_entry_pointing_outside_its_data_is_refused_not_parsed() {
        let built = build(&Spec::default());
        let key =
            SigningKey::generate("test <t@example.org>", None, kiln_core::channel::KeyAlgorithm::Ed25519).expect("key");
        let dir = tempfile::tempdir().expect("tempdir");
        sign_rpm(&built.path, &dir.path().join("good.rpm"), &key).expect("a well-formed package signs");
        // The main header's first index entry claims data far past its store
        // (the shape of the input that made the `rpm` crate panic).
        let mut bytes = built.bytes.clone();
        let sig_len = 16
            + 16 * u32::from_be_bytes(bytes[104..108].try_into().expect("4")) as usize
            + u32::from_be_bytes(bytes[108..112].try_into().expect("4")) as usize;
        let main = 96 + sig_len + (8 - sig_len % 8) % 8;
        bytes[main + 16 + 8..main + 16 + 12].copy_from_slice(&55_300u32.to_be_bytes());
        let bad = dir.path().join("bad.rpm");
        std::fs::write(&bad, &bytes).expect("write");
        let err = sign_rpm(&bad, &dir.path().join("out.rpm"), &key).expect_err("refused");
        assert!(err.to_string().contains("offset 55300 is past the"), "{err}");
        assert!(!dir.path().join("out.rpm").exists());
    }
}
