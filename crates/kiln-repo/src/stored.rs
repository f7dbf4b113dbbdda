//! Index entries as the publisher stores them (one JSON text per package),
//! read back for a new generation: ten thousand of them take tens of
//! milliseconds on one thread, so they are parsed on every CPU.

/// Parses JSON texts (stored index entries) on as many threads as there are
/// CPUs, in order; the first failure comes back with its position.
pub fn parse_all<T: serde::de::DeserializeOwned + Send>(
    texts: &[&str],
) -> std::result::Result<Vec<T>, (usize, serde_json::Error)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = texts.len().div_ceil(threads).max(1024);
    std::thread::scope(|s| {
        let parts: Vec<_> = texts
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| {
                s.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(i, t)| serde_json::from_str(t).map_err(|e| (n * chunk + i, e)))
                        .collect::<std::result::Result<Vec<T>, _>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(texts.len());
        for p in parts {
            out.extend(p.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?);
        }
        Ok(out)
    })
}
