//! Compressed indexes from cached pieces, so adding one package to a
//! 10,000-package repository recompresses one piece, not the whole index.
//!
//! An index is cut into pieces at content-defined points (after an entry
//! whose key hashes to a boundary), so a new entry changes only the piece it
//! falls into. Each piece is compressed once; an index is then:
//! - gzip: one member (readers that stop after the first member, like
//!   Python's `zlib.decompress(data, 31)` or Rust's `GzDecoder`, see it
//!   all) whose deflate data is the pieces' raw deflate streams, each ended
//!   with a sync flush (byte-aligned, not final), then an empty final
//!   block; the trailer's CRC-32 is combined from the pieces' own;
//! - xz: one stream whose blocks are the pieces' blocks, with an index and
//!   footer written here (apt reads only the first of concatenated xz
//!   *streams*, but any number of blocks within one).
//!
//! The compressed pieces of one index in one form are kept in the channel's
//! piece cache as one *pack* file, each piece under the SHA-256 of its
//! content. A pack is sealed with a CRC-32 and every piece in it is checked
//! against the piece it stands for (its sizes, and for gzip its CRC-32) on
//! every read. One file per index, not per piece: a first publish of 10,000
//! packages writes a few files instead of hundreds, and a later one reads a
//! few (creating many small files is slow on a file system that has just
//! freed many, as ext4 skips over recently freed inodes one by one).

use crate::hash::sha256;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// A piece ends after an entry whose key hash is 0 modulo this (about 48
/// entries, a few tens of KiB of Packages text per piece).
const BOUNDARY: u64 = 48;
/// A piece also ends when it grows past this, whatever the keys.
const MAX_PIECE: usize = 256 * 1024;
/// The ending of pack files' names. (An older kiln kept a file per piece,
/// `KEY.v2-...`; it does not read these, and these are pruned by it as
/// unused, and its files by this one.)
const PACK: &str = "p3";

/// Where pieces' compressed forms are kept between publishes (`None`: no cache).
pub struct PieceCache {
    dir: Option<PathBuf>,
    /// What the cache's packs hold, read on first use.
    found: OnceLock<Found>,
    /// The packs this round wrote or read from whole.
    used: Mutex<HashSet<String>>,
}

/// The whole packs of a cache directory.
#[derive(Default)]
struct Found {
    /// Each piece's compressed form, by `KEY.FORM`, and the pack it is in.
    parts: HashMap<String, (Vec<u8>, String)>,
}

/// Packs larger than this are not read (a 10,000-package index's is about
/// 1 MiB).
const PACK_MOST: u64 = 1 << 30;

/// A pack file's bytes, if it is a regular file (not a link, a FIFO or a
/// device someone put in the cache) of a sane size.
fn read_pack(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).ok()?;
    let meta = f.metadata().ok().filter(|m| m.is_file() && m.len() <= PACK_MOST)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

impl PieceCache {
    pub fn new(dir: Option<PathBuf>) -> Self {
        if let Some(d) = &dir {
            let _ = crate::fsio::create_dirs(d);
        }
        PieceCache { dir, found: OnceLock::new(), used: Mutex::new(HashSet::new()) }
    }

    /// Every whole pack of the cache. A pack that is not whole (the files
    /// are not synced, so after a power cut one may be empty or hold part of
    /// its bytes) is passed over: its pieces are made again, never
    /// assembled into an index that is then signed and served.
    fn found(&self) -> &Found {
        self.found.get_or_init(|| {
            let mut found = Found::default();
            let Some(entries) = self.dir.as_ref().and_then(|d| std::fs::read_dir(d).ok()) else { return found };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.ends_with(&format!(".{PACK}")) {
                    continue;
                }
                if let Some(parts) = read_pack(&e.path()).and_then(unseal).and_then(|b| unpack(&b)) {
                    found.parts.extend(parts.into_iter().map(|(part, bytes)| (part, (bytes, name.clone()))));
                }
            }
            found
        })
    }

    /// The name of the pack of an index whose pieces are `names`.
    fn pack_name(names: &[String]) -> String {
        format!("{}.{PACK}", sha256(names.join("\n").as_bytes()))
    }

    /// Keeps the compressed pieces of one index (`names[i]` is `parts[i]`'s)
    /// as one pack, unless that pack supplied every one of them
    /// (`all_from_pack`).
    fn keep(&self, names: &[String], parts: &[Vec<u8>], all_from_pack: bool) {
        let Some(dir) = self.dir.as_ref().filter(|_| !names.is_empty()) else { return };
        let pack = Self::pack_name(names);
        if !all_from_pack {
            // A cache write that fails only costs the next publish time.
            let _ = crate::fsio::write_atomic(&dir.join(&pack), &seal(&packed(names, parts)));
        }
        self.used.lock().unwrap_or_else(|e| e.into_inner()).insert(pack);
    }

    /// Removes what this round did not use: packs of indexes that changed,
    /// and anything else in the directory.
    pub fn prune(&self) {
        let Some(dir) = &self.dir else { return };
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if !used.contains(e.file_name().to_string_lossy().as_ref()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// A pack's bytes: for each part, its name's length (u16) and name, its
/// length (u64) and bytes, little-endian.
fn packed(names: &[String], parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 80).sum());
    for (name, part) in names.iter().zip(parts) {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// The parts of a pack ([`packed`]), or `None` if it is not one.
fn unpack(mut b: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (len, rest) = b.split_first_chunk::<2>()?;
        let (name, rest) = rest.split_at_checked(usize::from(u16::from_le_bytes(*len)))?;
        let (len, rest) = rest.split_first_chunk::<8>()?;
        let (part, rest) = rest.split_at_checked(usize::try_from(u64::from_le_bytes(*len)).ok()?)?;
        out.push((String::from_utf8(name.to_vec()).ok()?, part.to_vec()));
        b = rest;
    }
    Some(out)
}

/// `bytes` followed by their CRC-32, as the cache keeps them.
fn seal(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 4);
    out.extend_from_slice(bytes);
    out.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
    out
}

/// The bytes a cache file holds, if it is whole (see [`seal`]).
fn unseal(mut file: Vec<u8>) -> Option<Vec<u8>> {
    let at = file.len().checked_sub(4)?;
    let crc = u32::from_le_bytes(file[at..].try_into().ok()?);
    file.truncate(at);
    (crc32fast::hash(&file) == crc).then_some(file)
}

/// FNV-1a: a stable hash for boundary decisions (not for identity).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Joins `entries` (key, text), each followed by `sep`, into pieces cut at
/// content-defined points.
pub fn cut<'a>(entries: impl IntoIterator<Item = (&'a str, &'a [u8])>, sep: &[u8]) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut current = Vec::new();
    for (key, text) in entries {
        current.extend_from_slice(text);
        current.extend_from_slice(sep);
        if fnv(key) % BOUNDARY == 0 || current.len() >= MAX_PIECE {
            pieces.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// The pieces' cache keys (their SHA-256), for [`gzip_keyed`] and
/// [`xz_keyed`] when one index is compressed both ways. A large index's
/// pieces are hashed on every CPU, a share each.
pub fn keys(pieces: &[&[u8]]) -> Vec<String> {
    let threads = crate::spread::threads_for(pieces.iter().map(|p| p.len()).sum(), pieces.len());
    crate::spread::spread(pieces.len(), threads, |i| sha256(pieces[i]))
}

/// The pieces as one single-member gzip file.
pub fn gzip(pieces: &[&[u8]], level: u32, cache: &PieceCache) -> Vec<u8> {
    gzip_keyed(pieces, &keys(pieces), level, cache)
}

/// [`gzip`] with the pieces' [`keys`] already known.
pub fn gzip_keyed(pieces: &[&[u8]], keys: &[String], level: u32, cache: &PieceCache) -> Vec<u8> {
    // Cached form: CRC-32 and length of the piece, then its deflate data.
    let fits = |piece: &[u8], part: &[u8]| {
        part.get(..4) == Some(&crc32fast::hash(piece).to_le_bytes()[..])
            && part.get(4..12) == Some(&(piece.len() as u64).to_le_bytes()[..])
    };
    let parts = cached_parts(pieces, keys, &format!("dfl{level}"), cache, fits, |p| deflate_part(p, level));
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum::<usize>() + 20);
    // Header: magic, deflate, no flags, no time, no extra flags, Unix.
    out.extend_from_slice(&[0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03]);
    let mut crc = crc32fast::Hasher::new();
    let mut total = 0u64;
    for part in &parts {
        // Cached form: CRC-32 and length of the piece, then its deflate data.
        let (head, data) = part.split_at(12.min(part.len()));
        let piece_crc = u32::from_le_bytes(head.get(..4).and_then(|b| b.try_into().ok()).unwrap_or_default());
        let len = u64::from_le_bytes(head.get(4..12).and_then(|b| b.try_into().ok()).unwrap_or_default());
        crc.combine(&crc32fast::Hasher::new_with_initial_len(piece_crc, len));
        total = total.wrapping_add(len);
        out.extend_from_slice(data);
    }
    // An empty final block with fixed codes: BFINAL = 1, BTYPE = 01, then
    // end-of-block (seven zero bits), padded to the byte.
    out.extend_from_slice(&[0x03, 0x00]);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out
}

/// Each piece's cached form (named `KEY.suffix` in the cache), made by
/// `make` where the cache has none. The pieces are spread over the CPUs: on
/// a channel's first publish, or after a change of compression settings,
/// every one of them is compressed, and one index's pieces would otherwise
/// all fall on one thread.
///
/// A cached copy is used only if it `fits` its piece: the seal only tells a
/// torn write apart, not a file some other program or version wrote. (These
/// are checks against accidents, not against someone who may write the
/// cache: the channel's directory is the master's alone, beside its keys.)
fn cached_parts(
    pieces: &[&[u8]],
    keys: &[String],
    suffix: &str,
    cache: &PieceCache,
    fits: impl Fn(&[u8], &[u8]) -> bool + Sync,
    make: impl Fn(&[u8]) -> Vec<u8> + Sync,
) -> Vec<Vec<u8>> {
    assert_eq!(pieces.len(), keys.len(), "a key for every piece");
    let names: Vec<String> = keys.iter().map(|k| format!("{k}.{suffix}")).collect();
    let pack = PieceCache::pack_name(&names);
    let found = if cache.dir.is_some() { Some(cache.found()) } else { None };
    let threads = crate::spread::threads_for(pieces.iter().map(|p| p.len()).sum(), pieces.len());
    let made = crate::spread::spread(pieces.len(), threads, |i| {
        match found.and_then(|f| f.parts.get(&names[i])).filter(|(part, _)| fits(pieces[i], part)) {
            Some((part, from)) => (part.clone(), *from == pack),
            None => (make(pieces[i]), false),
        }
    });
    let all_from_pack = made.iter().all(|(_, from_pack)| *from_pack);
    let parts: Vec<Vec<u8>> = made.into_iter().map(|(part, _)| part).collect();
    cache.keep(&names, &parts, all_from_pack);
    parts
}

/// A piece as raw deflate data ended by a sync flush (so the next piece's
/// data may follow it), cached behind the piece's CRC-32 and length.
fn deflate_part(data: &[u8], level: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + data.len() / 3 + 1024);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let mut z = flate2::Compress::new(flate2::Compression::new(level), false);
    loop {
        let consumed = (z.total_in() as usize).min(data.len());
        // zlib's sync flush: it ends on a byte boundary, without a final
        // block. It is complete once all input is taken and output room is
        // left over. (Compressing into memory with valid settings cannot fail.)
        if z.compress_vec(&data[consumed..], &mut out, flate2::FlushCompress::Sync).is_err() {
            break;
        }
        if z.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(4096));
    }
    out
}

/// One xz stream whose blocks are the pieces, each compressed on its own.
pub fn xz(pieces: &[&[u8]], preset: u32, cache: &PieceCache) -> Vec<u8> {
    xz_keyed(pieces, &keys(pieces), preset, cache)
}

/// [`xz`] with the pieces' [`keys`] already known.
pub fn xz_keyed(pieces: &[&[u8]], keys: &[String], preset: u32, cache: &PieceCache) -> Vec<u8> {
    if pieces.is_empty() {
        return xz_stream(&[], preset);
    }
    // Cached form: uncompressed size, unpadded size, then the block, padded
    // to four bytes.
    let fits = |piece: &[u8], part: &[u8]| {
        let size = |at: usize| part.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        let block = part.len().saturating_sub(16) as u64;
        match (size(0), size(8)) {
            (Some(uncompressed), Some(unpadded)) => {
                uncompressed == piece.len() as u64 && unpadded <= block && block - unpadded < 4 && block % 4 == 0
            }
            _ => false,
        }
    };
    let blocks = cached_parts(pieces, keys, &format!("xzb{preset}"), cache, fits, |p| xz_block(p, preset));
    let mut out = Vec::with_capacity(blocks.iter().map(Vec::len).sum::<usize>() + 64);
    // Stream header: magic, flags (CRC64 check, as the blocks were made with), CRC32 of the flags.
    let flags = [0x00, 0x04];
    out.extend_from_slice(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]);
    out.extend_from_slice(&flags);
    out.extend_from_slice(&crc32fast::hash(&flags).to_le_bytes());
    let mut index = vec![0x00];
    varint(&mut index, blocks.len() as u64);
    for b in &blocks {
        // Cached form: uncompressed size, unpadded size, then the block itself.
        let (sizes, block) = b.split_at(16.min(b.len()));
        let uncompressed = u64::from_le_bytes(sizes.get(..8).and_then(|b| b.try_into().ok()).unwrap_or_default());
        let unpadded = u64::from_le_bytes(sizes.get(8..16).and_then(|b| b.try_into().ok()).unwrap_or_default());
        out.extend_from_slice(block);
        varint(&mut index, unpadded);
        varint(&mut index, uncompressed);
    }
    while index.len() % 4 != 0 {
        index.push(0);
    }
    let crc = crc32fast::hash(&index);
    index.extend_from_slice(&crc.to_le_bytes());
    let backward = (index.len() / 4 - 1) as u32;
    out.extend_from_slice(&index);
    let mut footer_body = backward.to_le_bytes().to_vec();
    footer_body.extend_from_slice(&flags);
    out.extend_from_slice(&crc32fast::hash(&footer_body).to_le_bytes());
    out.extend_from_slice(&footer_body);
    out.extend_from_slice(b"YZ");
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..63).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn xz_stream(data: &[u8], preset: u32) -> Vec<u8> {
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), preset);
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// A piece as one xz block: compressed as a single-block stream, then the
/// block and its index record taken out (cached as sizes + block).
fn xz_block(data: &[u8], preset: u32) -> Vec<u8> {
    let stream = xz_stream(data, preset);
    let parsed = (|| {
        let n = stream.len();
        let footer = stream.get(n.checked_sub(12)?..)?;
        let backward = u32::from_le_bytes(footer.get(4..8)?.try_into().ok()?);
        let index_size = (backward as usize + 1) * 4;
        let index_start = n.checked_sub(12 + index_size)?;
        let block = stream.get(12..index_start)?;
        let mut pos = index_start + 1;
        let count = read_varint(&stream, &mut pos)?;
        if count != 1 {
            return None;
        }
        let unpadded = read_varint(&stream, &mut pos)?;
        let uncompressed = read_varint(&stream, &mut pos)?;
        let mut out = Vec::with_capacity(block.len() + 16);
        out.extend_from_slice(&uncompressed.to_le_bytes());
        out.extend_from_slice(&unpadded.to_le_bytes());
        out.extend_from_slice(block);
        Some(out)
    })();
    // liblzma always writes one block for a non-empty input; anything else is a bug here.
    parsed.unwrap_or_else(|| {
        let mut out = vec![0u8; 16];
        out.extend_from_slice(&stream);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pieces_of(n: usize) -> Vec<Vec<u8>> {
        let texts: Vec<(String, String)> = (0..n)
            .map(|i| (format!("pkg{i}"), format!("Package: pkg{i}\nVersion: 1.{i}\nDescription: thing {i}\n\n")))
            .collect();
        cut(texts.iter().map(|(k, t)| (k.as_str(), t.as_bytes())), b"")
    }

    #[test]
    fn pieces_decompress_to_the_whole_and_are_reused() {
        let dir = tempfile::tempdir().expect("tmp");
        let pieces = pieces_of(500);
        assert!(pieces.len() > 3, "500 entries make several pieces");
        let whole: Vec<u8> = pieces.concat();
        let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let cache = PieceCache::new(Some(dir.path().to_path_buf()));
        let xz_bytes = xz(&refs, 1, &cache);
        let gz_bytes = gzip(&refs, 6, &cache);

        let mut out = Vec::new();
        liblzma::read::XzDecoder::new(&xz_bytes[..]).read_to_end(&mut out).expect("xz decodes");
        assert_eq!(out, whole);
        // One stream: a decoder that stops after the first stream still sees everything.
        let mut single = Vec::new();
        let stream = liblzma::stream::Stream::new_stream_decoder(u64::MAX, 0).expect("decoder");
        liblzma::read::XzDecoder::new_stream(&xz_bytes[..], stream).read_to_end(&mut single).expect("decodes");
        assert_eq!(single, whole);
        // One gzip member: a reader that stops after the first sees it all,
        // and the trailer's CRC-32 and length are checked while reading.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz_bytes[..]).read_to_end(&mut out).expect("gz decodes");
        assert_eq!(out, whole);
        let mut raw = flate2::Decompress::new(false);
        let mut sink = Vec::with_capacity(whole.len() + 1);
        raw.decompress_vec(&gz_bytes[10..], &mut sink, flate2::FlushDecompress::Finish).expect("deflate");
        assert_eq!(raw.total_in() as usize, gz_bytes.len() - 18, "the deflate data ends where the trailer begins");

        // A new entry changes one piece: the others come from the cache,
        // which holds one pack for each form of the index.
        let cached = std::fs::read_dir(dir.path()).expect("cache").count();
        assert_eq!(cached, 2);
        let mut more: Vec<(String, String)> = (0..500)
            .map(|i| (format!("pkg{i}"), format!("Package: pkg{i}\nVersion: 1.{i}\nDescription: thing {i}\n\n")))
            .collect();
        more.insert(250, ("newpkg".into(), "Package: newpkg\nVersion: 1\n\n".into()));
        let pieces2 = cut(more.iter().map(|(k, t)| (k.as_str(), t.as_bytes())), b"");
        let refs2: Vec<&[u8]> = pieces2.iter().map(Vec::as_slice).collect();
        let cache2 = PieceCache::new(Some(dir.path().to_path_buf()));
        let made = std::sync::atomic::AtomicUsize::new(0);
        let parts = cached_parts(
            &refs2,
            &keys(&refs2),
            "xzb1",
            &cache2,
            |_, _| true,
            |p| {
                made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                xz_block(p, 1)
            },
        );
        assert_eq!(made.into_inner(), 1, "one piece compressed anew");
        assert_eq!(parts.len(), refs2.len());
        let xz2 = xz(&refs2, 1, &cache2);
        cache2.prune();
        assert_eq!(std::fs::read_dir(dir.path()).expect("cache").count(), 1, "the new index's xz pack alone is kept");
        let mut out = Vec::new();
        liblzma::read::XzDecoder::new(&xz2[..]).read_to_end(&mut out).expect("xz decodes");
        assert_eq!(out, pieces2.concat());
    }

    #[test]
    fn a_cached_pack_cut_short_or_changed_is_made_again() {
        let pieces = pieces_of(300);
        let whole: Vec<u8> = pieces.concat();
        let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let both = |dir: &std::path::Path| {
            let cache = PieceCache::new(Some(dir.to_path_buf()));
            (xz(&refs, 1, &cache), gzip(&refs, 6, &cache))
        };
        // What a power cut may leave of files that were never synced (empty,
        // cut short, a byte changed), and a whole pack whose pieces are not
        // the index's: each, in turn, in place of both packs.
        for damage in 0..4 {
            let dir = tempfile::tempdir().expect("tmp");
            let first = both(dir.path());
            let files: Vec<PathBuf> =
                std::fs::read_dir(dir.path()).expect("cache").map(|e| e.expect("entry").path()).collect();
            assert_eq!(files.len(), 2, "a pack for each form");
            for f in &files {
                let bytes = std::fs::read(f).expect("read");
                let parts = unpack(&unseal(bytes.clone()).expect("sealed")).expect("a pack");
                let damaged = match damage {
                    0 => Vec::new(),
                    1 => bytes[..bytes.len() / 2].to_vec(),
                    2 => {
                        let mut b = bytes.clone();
                        b[bytes.len() / 3] ^= 0x55;
                        b
                    }
                    // Sealed, with the right names, but not the pieces' forms.
                    _ => {
                        let names: Vec<String> = parts.iter().map(|(n, _)| n.clone()).collect();
                        let junk: Vec<Vec<u8>> = parts.iter().map(|_| vec![7u8; 40]).collect();
                        seal(&packed(&names, &junk))
                    }
                };
                std::fs::write(f, damaged).expect("damage");
            }
            let again = both(dir.path());
            assert!(again == first, "damage {damage}: the pieces were made again, the indexes are as before");
            let mut out = Vec::new();
            liblzma::read::XzDecoder::new(&again.0[..]).read_to_end(&mut out).expect("xz decodes");
            assert_eq!(out, whole);
            out.clear();
            flate2::read::GzDecoder::new(&again.1[..]).read_to_end(&mut out).expect("gz decodes");
            assert_eq!(out, whole);
            // And the cache holds whole packs again.
            for f in &files {
                let bytes = std::fs::read(f).expect("read");
                assert!(unseal(bytes).and_then(|b| unpack(&b)).is_some(), "damage {damage}: {} rewritten", f.display());
            }
        }
    }

    #[test]
    fn what_is_not_a_regular_file_in_the_cache_is_not_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let pieces = pieces_of(300);
        let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let first = xz(&refs, 1, &PieceCache::new(Some(dir.path().to_path_buf())));
        // A FIFO would block a plain read for ever; a link could point anywhere.
        let made = std::process::Command::new("mkfifo").arg(dir.path().join("fifo.p3")).status().expect("mkfifo");
        assert!(made.success(), "mkfifo");
        let pack = std::fs::read_dir(dir.path())
            .expect("cache")
            .map(|e| e.expect("entry").path())
            .find(|p| p.file_name().is_some_and(|n| n != "fifo.p3"))
            .expect("the xz pack");
        std::os::unix::fs::symlink(&pack, dir.path().join("link.p3")).expect("symlink");
        let again = xz(&refs, 1, &PieceCache::new(Some(dir.path().to_path_buf())));
        assert!(again == first, "made from the real pack, the others passed over");
        assert!(read_pack(&dir.path().join("link.p3")).is_none() && read_pack(&pack).is_some());
    }

    #[test]
    fn a_large_index_compressed_on_every_cpu_is_whole_and_in_order() {
        // Large enough for the pieces to be spread over threads.
        let pieces = pieces_of(8000);
        let whole: Vec<u8> = pieces.concat();
        assert!(whole.len() > crate::spread::PARALLEL_FROM, "{} bytes", whole.len());
        let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let dir = tempfile::tempdir().expect("tmp");
        for cache in [PieceCache::new(None), PieceCache::new(Some(dir.path().to_path_buf()))] {
            let mut out = Vec::new();
            liblzma::read::XzDecoder::new(&xz(&refs, 1, &cache)[..]).read_to_end(&mut out).expect("xz decodes");
            assert_eq!(out, whole);
            out.clear();
            flate2::read::GzDecoder::new(&gzip(&refs, 6, &cache)[..]).read_to_end(&mut out).expect("gz decodes");
            assert_eq!(out, whole);
        }
    }

    #[test]
    fn empty_indexes_are_valid() {
        let cache = PieceCache::new(None);
        let mut out = Vec::new();
        liblzma::read::XzDecoder::new(&xz(&[], 1, &cache)[..]).read_to_end(&mut out).expect("xz");
        assert!(out.is_empty());
        flate2::read::GzDecoder::new(&gzip(&[], 6, &cache)[..]).read_to_end(&mut out).expect("gz");
        assert!(out.is_empty());
    }
}
