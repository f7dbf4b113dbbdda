//! Independent jobs spread over the CPUs: the Release's sums, the pieces of
//! an index compressed for the first time.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Below this many bytes of work in all, one thread is quicker than starting others.
pub(crate) const PARALLEL_FROM: usize = 256 * 1024;

/// How many threads `bytes` of work in `jobs` jobs is worth: one per CPU
/// when there is enough of it, never more than there are jobs.
pub(crate) fn threads_for(bytes: usize, jobs: usize) -> usize {
    if bytes < PARALLEL_FROM {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(jobs).max(1)
    }
}

/// `job(0)` … `job(jobs - 1)` on `threads` threads (this one among them),
/// each thread taking the next job when it is done, so jobs of unequal
/// size keep every thread busy to the end. Results come in job order.
pub(crate) fn spread<T: Send>(jobs: usize, threads: usize, job: impl Fn(usize) -> T + Sync) -> Vec<T> {
    if threads <= 1 {
        return (0..jobs).map(job).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= jobs {
                return done;
            }
            done.push((i, job(i)));
        }
    };
    let mut done: Vec<(usize, T)> = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut done = work();
        for h in helpers {
            done.extend(h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        done
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_job_runs_once_and_results_keep_their_order() {
        for threads in [1, 2, 5] {
            let runs = std::sync::atomic::AtomicUsize::new(0);
            let out = super::spread(100, threads, |i| {
                runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i * i
            });
            assert_eq!(out, (0..100).map(|i| i * i).collect::<Vec<_>>());
            assert_eq!(runs.into_inner(), 100);
        }
        assert!(super::spread(0, 2, |i| i).is_empty());
    }
}
