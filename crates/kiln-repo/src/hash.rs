//! The checksums repository indexes carry: MD5, SHA-1 and SHA-256 in one
//! pass (APT's `Release` and `Packages` list all three).

use crate::{RepoError, Result};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sums {
    pub size: u64,
    pub md5: String,
    pub sha1: String,
    pub sha256: String,
}

/// Below this, hashing on one thread is quicker than starting another.
const PARALLEL_FROM: usize = 256 * 1024;

/// Hashes a byte string with all three algorithms. A large one (an index
/// of thousands of packages) is hashed with MD5 on a thread of its own
/// beside SHA-1 and SHA-256: MD5 has no instructions of its own in the CPU
/// and takes as long as the other two together.
pub fn sums(bytes: &[u8]) -> Sums {
    let md5_of = || hex::encode(Md5::digest(bytes));
    let others = || (hex::encode(Sha1::digest(bytes)), hex::encode(Sha256::digest(bytes)));
    let (md5, (sha1, sha256)) = if bytes.len() >= PARALLEL_FROM {
        std::thread::scope(|s| {
            let md5 = s.spawn(md5_of);
            let others = others();
            (md5.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), others)
        })
    } else {
        (md5_of(), others())
    };
    Sums { size: bytes.len() as u64, md5, sha1, sha256 }
}

/// SHA-512 only, hex (APT's `Release` lists it beside the others).
pub fn sha512(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha512::digest(bytes))
}

/// SHA-256 only, hex.
pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hashes a file with all three algorithms, reading it once.
pub fn file_sums(path: &Path) -> Result<Sums> {
    let mut f = std::fs::File::open(path).map_err(|e| RepoError::io(path, e))?;
    let (mut a, mut b, mut c) = (Md5::new(), Sha1::new(), Sha256::new());
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| RepoError::io(path, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        a.update(&buf[..n]);
        b.update(&buf[..n]);
        c.update(&buf[..n]);
    }
    Ok(Sums {
        size,
        md5: hex::encode(a.finalize()),
        sha1: hex::encode(b.finalize()),
        sha256: hex::encode(c.finalize()),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_digests() {
        let s = super::sums(b"abc");
        assert_eq!(s.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(s.sha1, "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(s.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
