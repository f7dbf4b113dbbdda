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

/// Parsed entries kept from one generation to the next, by the id of the
/// row that stores each: rows are never changed in place (a package that
/// changes is a new row, and ids are never reused), so adding one package
/// to a channel parses one entry, not the channel's thousands. Memory: about
/// the size of the channel's index text.
pub struct EntryCache<T> {
    entries: std::collections::HashMap<i64, (usize, std::sync::Arc<T>)>,
}

impl<T> Default for EntryCache<T> {
    fn default() -> Self {
        EntryCache { entries: std::collections::HashMap::new() }
    }
}

impl<T: serde::de::DeserializeOwned + Send> EntryCache<T> {
    /// The entries of `rows` (id, stored text), in order: those seen before
    /// from the cache, the rest parsed ([`parse_all`]). Entries of rows not
    /// given any more are forgotten. A failure names its position in `rows`.
    pub fn load(
        &mut self,
        rows: &[(i64, &str)],
    ) -> std::result::Result<Vec<std::sync::Arc<T>>, (usize, serde_json::Error)> {
        // The length is a cheap check that a row is the one seen before.
        let known = |id: &i64, text: &str| self.entries.get(id).is_some_and(|(len, _)| *len == text.len());
        let fresh: Vec<usize> = (0..rows.len()).filter(|&i| !known(&rows[i].0, rows[i].1)).collect();
        let texts: Vec<&str> = fresh.iter().map(|&i| rows[i].1).collect();
        let parsed = parse_all::<T>(&texts).map_err(|(j, e)| (fresh.get(j).copied().unwrap_or(j), e))?;
        let mut next = std::collections::HashMap::with_capacity(rows.len());
        for (&i, entry) in fresh.iter().zip(parsed) {
            next.insert(rows[i].0, (rows[i].1.len(), std::sync::Arc::new(entry)));
        }
        for (id, _) in rows {
            if !next.contains_key(id) {
                if let Some(kept) = self.entries.remove(id) {
                    next.insert(*id, kept);
                }
            }
        }
        self.entries = next;
        Ok(rows.iter().filter_map(|(id, _)| self.entries.get(id).map(|(_, e)| e.clone())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_seen_before_are_not_parsed_again_and_gone_rows_are_forgotten() {
        let mut cache: EntryCache<Vec<u32>> = EntryCache::default();
        let first = cache.load(&[(1, "[1]"), (2, "[2, 2]")]).expect("parse");
        assert_eq!(*first[1], vec![2, 2]);
        // Row 1 comes again (from the cache: the same allocation), row 3 is new.
        let second = cache.load(&[(1, "[1]"), (3, "[3]")]).expect("parse");
        assert!(std::sync::Arc::ptr_eq(&first[0], &second[0]));
        assert_eq!(*second[1], vec![3]);
        assert_eq!(cache.entries.len(), 2, "row 2 is forgotten");
        // A row whose text is not what was seen is parsed anew; a bad one is named.
        let third = cache.load(&[(1, "[10]"), (3, "[3]")]).expect("parse");
        assert_eq!(*third[0], vec![10]);
        let (at, _) = cache.load(&[(3, "[3]"), (4, "{")]).expect_err("a bad entry");
        assert_eq!(at, 1);
        let parsed: Vec<Vec<u32>> = parse_all(&["[1]", "[]"]).expect("parse");
        assert_eq!(parsed, vec![vec![1], vec![]]);
    }
}
