//! Step logs on disk: appended while a step runs (readable from any offset
//! at once, for live tails), gzip-compressed when the step ends.
//!
//! Layout: `DATA_DIR/logs/<build id>/<step index>.log` while running,
//! `<step index>.log.gz` afterwards. A reader never sees neither: the
//! compressed file is complete before the plain one is removed.

use flate2::read::GzDecoder;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The most a single step's log may hold; output beyond it is dropped with
/// one notice, so a runaway step cannot fill the master's disk.
pub const MAX_STEP_LOG: u64 = 256 * 1024 * 1024;

pub struct LogStore {
    root: PathBuf,
    /// Builds that may receive log output, with the worker running them.
    active: Mutex<HashMap<i64, Active>>,
    /// Bytes of output stored since the master started (for `/metrics`).
    received: std::sync::atomic::AtomicU64,
}

struct Active {
    worker: String,
    /// How many steps the build has: output for any other index is refused.
    steps: u32,
    open: HashMap<u32, (File, u64)>,
}

impl LogStore {
    pub fn new(data_dir: &Path) -> io::Result<LogStore> {
        let root = data_dir.join("logs");
        fs::create_dir_all(&root)?;
        Ok(LogStore { root, active: Mutex::new(HashMap::new()), received: Default::default() })
    }

    fn dir(&self, build_id: i64) -> PathBuf {
        self.root.join(build_id.to_string())
    }

    fn plain(&self, build_id: i64, step: u32) -> PathBuf {
        self.dir(build_id).join(format!("{step}.log"))
    }

    fn gz(&self, build_id: i64, step: u32) -> PathBuf {
        self.dir(build_id).join(format!("{step}.log.gz"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Active>> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts accepting output for a build from `worker`. The build's
    /// directory is made when the first output arrives.
    pub fn begin(&self, build_id: i64, worker: &str, steps: u32) {
        self.lock().insert(build_id, Active { worker: worker.to_string(), steps, open: HashMap::new() });
    }

    /// Removes what an attempt of a build logged (it is being re-queued).
    pub fn discard(&self, build_id: i64) -> io::Result<()> {
        self.end(build_id);
        match fs::remove_dir_all(self.dir(build_id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether `worker` is the one running the build now.
    pub fn is_running_on(&self, build_id: i64, worker: &str) -> bool {
        self.lock().get(&build_id).is_some_and(|a| a.worker == worker)
    }

    /// Stops accepting output for a build.
    pub fn end(&self, build_id: i64) {
        self.lock().remove(&build_id);
    }

    /// Appends output a worker sent. Chunks are placed by offset: a repeat of
    /// bytes already stored is ignored, so a worker may re-send after a
    /// reconnect. Returns false if the build is not this worker's.
    pub fn append(&self, build_id: i64, worker: &str, step: u32, offset: u64, data: &str) -> io::Result<bool> {
        let mut active = self.lock();
        let Some(a) = active.get_mut(&build_id) else {
            return Ok(false);
        };
        // A worker may write only its own build's logs, and only its steps'
        // (each step is a file: a made-up index would be a new one).
        if a.worker != worker || step >= a.steps {
            return Ok(false);
        }
        let (file, len) = match a.open.entry(step) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let path = self.root.join(build_id.to_string()).join(format!("{step}.log"));
                let open = || OpenOptions::new().create(true).append(true).read(true).open(&path);
                let f = match open() {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::create_dir_all(self.root.join(build_id.to_string()))?;
                        open()?
                    }
                    other => other?,
                };
                let len = f.metadata()?.len();
                e.insert((f, len))
            }
        };
        let end = offset + data.len() as u64;
        if end <= *len {
            return Ok(true);
        }
        let skip = (*len).saturating_sub(offset) as usize;
        let mut bytes = data.as_bytes().get(skip..).unwrap_or_default();
        if *len >= MAX_STEP_LOG {
            return Ok(true);
        }
        let mut notice = Vec::new();
        if *len + bytes.len() as u64 > MAX_STEP_LOG {
            bytes = &bytes[..(MAX_STEP_LOG - *len) as usize];
            notice.extend_from_slice(
                format!("\n[kiln: log truncated at {} MiB; further output dropped]\n", MAX_STEP_LOG >> 20).as_bytes(),
            );
        }
        file.write_all(bytes)?;
        file.write_all(&notice)?;
        *len += (bytes.len() + notice.len()) as u64;
        self.received.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }

    /// Bytes of build output stored since the master started.
    pub fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes stored so far for a step.
    pub fn size(&self, build_id: i64, step: u32) -> u64 {
        if let Some((_, len)) = self.lock().get(&build_id).and_then(|a| a.open.get(&step)) {
            return *len;
        }
        fs::metadata(self.plain(build_id, step)).map(|m| m.len()).unwrap_or(0)
    }

    /// Compresses a finished step's log; returns its size in bytes.
    pub fn finish_step(&self, build_id: i64, step: u32) -> io::Result<u64> {
        if let Some(a) = self.lock().get_mut(&build_id) {
            a.open.remove(&step);
        }
        let plain = self.plain(build_id, step);
        let mut input = match File::open(&plain) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(self.read_gz_len(build_id, step));
            }
            Err(e) => return Err(e),
        };
        let gz = self.gz(build_id, step);
        let tmp = gz.with_extension("gz.tmp");
        let mut enc = flate2::write::GzEncoder::new(File::create(&tmp)?, flate2::Compression::default());
        let n = io::copy(&mut input, &mut enc)?;
        // No fsync: a log lost to a power cut is not worth a disk flush per step.
        enc.finish()?;
        fs::rename(&tmp, &gz)?;
        fs::remove_file(&plain)?;
        Ok(n)
    }

    fn read_gz_len(&self, build_id: i64, step: u32) -> u64 {
        File::open(self.gz(build_id, step))
            .map(|f| io::copy(&mut GzDecoder::new(f), &mut io::sink()).unwrap_or(0))
            .unwrap_or(0)
    }

    /// Reads up to `limit` bytes of a step's log from `offset`. The text is
    /// cut back to a whole UTF-8 character so a reader can resume at
    /// `offset + returned length`.
    pub fn read(&self, build_id: i64, step: u32, offset: u64, limit: usize) -> io::Result<String> {
        let mut buf = Vec::new();
        match File::open(self.plain(build_id, step)) {
            Ok(mut f) => {
                f.seek(SeekFrom::Start(offset))?;
                f.take(limit as u64).read_to_end(&mut buf)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match File::open(self.gz(build_id, step)) {
                Ok(f) => {
                    let mut dec = GzDecoder::new(f);
                    io::copy(&mut (&mut dec).take(offset), &mut io::sink())?;
                    dec.take(limit as u64).read_to_end(&mut buf)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
        let valid = match std::str::from_utf8(&buf) {
            Ok(_) => buf.len(),
            Err(e) => e.valid_up_to(),
        };
        buf.truncate(valid);
        Ok(String::from_utf8(buf).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_compress_and_resend() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = LogStore::new(dir.path()).expect("store");
        assert!(!logs.append(1, "w", 0, 0, "early").expect("append"));
        logs.begin(1, "w", 2);
        assert!(!logs.append(1, "other", 0, 0, "spoof").expect("append"));
        assert!(logs.append(1, "w", 0, 0, "hello ").expect("append"));
        assert!(logs.append(1, "w", 0, 6, "wörld\n").expect("append"));
        // A re-sent chunk that overlaps what is stored adds only the new tail.
        assert!(logs.append(1, "w", 0, 6, "wörld\nagain\n").expect("append"));
        assert_eq!(logs.size(1, 0), 19);
        assert_eq!(logs.read(1, 0, 6, 1000).expect("read"), "wörld\nagain\n");
        // A limit inside a multi-byte character stops before it.
        assert_eq!(logs.read(1, 0, 6, 2).expect("read"), "w");
        assert_eq!(logs.finish_step(1, 0).expect("finish"), 19);
        assert!(!dir.path().join("logs/1/0.log").exists());
        assert_eq!(logs.read(1, 0, 0, 1000).expect("read"), "hello wörld\nagain\n");
        assert_eq!(logs.read(1, 0, 13, 1000).expect("read"), "again\n");
        assert_eq!(logs.read(1, 5, 0, 1000).expect("read"), "");
    }
}
