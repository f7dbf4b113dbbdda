//! RPM header signatures, made natively with the channel's key so that
//! `rpm -K` and dnf's `gpgcheck=1` accept the package.

use crate::fsio::write_atomic;
use crate::key::SigningKey;
use crate::{RepoError, Result};
use std::path::Path;

/// Signs the RPM at `src` with `key` and writes the signed package to `dest`
/// (atomically, mode 0644). An existing signature by the same key is replaced.
pub fn sign_rpm(src: &Path, dest: &Path, key: &SigningKey) -> Result<()> {
    let mut pkg = rpm::Package::open(src).map_err(|e| RepoError::bad(src, e))?;
    pkg.sign(key.rpm_signer()?).map_err(|e| RepoError::Sign(format!("{}: {e}", src.display())))?;
    let mut bytes = Vec::new();
    pkg.write(&mut bytes).map_err(|e| RepoError::Sign(format!("{}: {e}", src.display())))?;
    write_atomic(dest, &bytes)
}
