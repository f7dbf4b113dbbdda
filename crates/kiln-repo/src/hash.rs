//! The checksums repository indexes carry: MD5, SHA-1 and SHA-256 in one
//! pass (APT's `Packages` lists all three), and the four of a `Release`
//! spread over the CPUs.

use crate::spread::PARALLEL_FROM;
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

/// The digests APT's `Release` lists for one file, hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSums {
    pub size: u64,
    pub md5: String,
    pub sha1: String,
    pub sha256: String,
    pub sha512: String,
}

/// The four algorithms of a `Release`, with their cost per byte relative to
/// SHA-256 (MD5 and SHA-512 have no instructions of their own in the CPU
/// and run at about half its speed; SHA-1 and SHA-256 have).
const RELEASE_ALGORITHMS: [u64; 4] = [5, 2, 2, 5];

fn digest(algorithm: usize, bytes: &[u8]) -> String {
    match algorithm {
        0 => hex::encode(Md5::digest(bytes)),
        1 => hex::encode(Sha1::digest(bytes)),
        2 => hex::encode(Sha256::digest(bytes)),
        _ => hex::encode(sha2::Sha512::digest(bytes)),
    }
}

/// Hashes every file of a `Release` with all four algorithms. Each file and
/// algorithm is one job; the jobs are spread over the CPUs, longest first,
/// each thread taking the next when it is done, so one large index (its
/// MD5 the longest job) and many small ones keep every CPU busy to the end.
pub fn release_sums(files: &[&[u8]]) -> Vec<ReleaseSums> {
    let mut jobs: Vec<(usize, usize)> = (0..files.len()).flat_map(|f| (0..4).map(move |a| (f, a))).collect();
    jobs.sort_by_key(|&(f, a)| std::cmp::Reverse(files[f].len() as u64 * RELEASE_ALGORITHMS[a]));
    let total: usize = files.iter().map(|f| f.len()).sum();
    let threads = crate::spread::threads_for(total, jobs.len());
    let digests = crate::spread::spread(jobs.len(), threads, |i| digest(jobs[i].1, files[jobs[i].0]));
    let done = jobs.iter().zip(digests).map(|(&(f, a), hex)| (f, a, hex));
    let mut out: Vec<ReleaseSums> = files
        .iter()
        .map(|f| ReleaseSums {
            size: f.len() as u64,
            md5: String::new(),
            sha1: String::new(),
            sha256: String::new(),
            sha512: String::new(),
        })
        .collect();
    for (f, a, hex) in done {
        let sums = &mut out[f];
        *[&mut sums.md5, &mut sums.sha1, &mut sums.sha256, &mut sums.sha512][a] = hex;
    }
    out
}

/// SHA-256 only, hex.
pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The size and SHA-256 (hex) of a file, for what needs no other sum (an
/// RPM's checksum in YUM's repodata; comparing two files).
pub fn file_sha256(path: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path).map_err(|e| RepoError::io(path, e))?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut f, &mut hasher).map_err(|e| RepoError::io(path, e))?;
    Ok((size, hex::encode(hasher.finalize())))
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

    #[test]
    fn a_files_sha256_is_its_bytes_sha256() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &bytes).expect("write");
        let (size, sha256) = super::file_sha256(&path).expect("hash");
        assert_eq!((size, sha256), (bytes.len() as u64, super::sha256(&bytes)));
        assert_eq!(super::file_sums(&path).expect("sums").sha256, super::sha256(&bytes));
        assert!(super::file_sha256(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn release_sums_match_each_algorithm_on_one_thread_or_many() {
        // Large enough to be spread over threads, with small files among them.
        let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let files: Vec<&[u8]> = vec![b"abc", &big, b"", &big[..300_000], b"abc"];
        for sums in [super::release_sums(&files), super::release_sums(&files[..1])] {
            for (s, f) in sums.iter().zip(&files) {
                let one = super::sums(f);
                assert_eq!((s.size, &s.md5, &s.sha1, &s.sha256), (one.size, &one.md5, &one.sha1, &one.sha256));
                assert_eq!(s.sha512, super::sha512(f));
            }
        }
        assert_eq!(
            super::release_sums(&[b"abc"])[0].sha512,
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }
}
