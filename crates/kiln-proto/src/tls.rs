//! The PEM files TLS needs, read the same way by the master (its ports'
//! certificates, the client CAs) and the worker (the master's CA, its own
//! certificate): errors name the file.

use std::path::Path;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::RootCertStore;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsFileError(String);

fn open(path: &Path) -> Result<std::io::BufReader<std::fs::File>, TlsFileError> {
    std::fs::File::open(path)
        .map(std::io::BufReader::new)
        .map_err(|e| TlsFileError(format!("cannot open {}: {e}", path.display())))
}

/// The certificates in a PEM file (a chain: the first is the leaf).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsFileError(format!("cannot read certificates from {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsFileError(format!("no certificate in {}", path.display())));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|e| TlsFileError(format!("cannot read the private key {}: {e}", path.display())))?
        .ok_or_else(|| TlsFileError(format!("no private key in {}", path.display())))
}

/// The CA certificates of a PEM file, as trust roots.
pub fn roots(path: &Path) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| TlsFileError(format!("{} holds an unusable CA certificate: {e}", path.display())))?;
    }
    Ok(roots)
}
