//! The sliding window behind wick's own gauges: latency quantiles, request rate, the model
//! worker's busy fraction and the pending-inputs average.
//!
//! Writers never wait on a scrape. The model thread (after every batch), the handlers (after
//! every answer) and the pending sampler only push into small inboxes, each behind a lock held
//! for one push or one buffer swap. A scrape takes the inboxes' contents with that swap, folds
//! them into the window under a lock no writer ever takes, and sorts a copy of the latencies
//! after releasing even that.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Most samples of each kind kept, in an inbox or in the window; past it the oldest go first
/// (bounded memory even if nothing scrapes).
pub(super) const WINDOW_CAPACITY: usize = 100_000;

/// The quantiles `wick_latency_seconds` reports.
pub(super) const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

/// What a scrape reads: the gauges over the window and the latency summary.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Snapshot {
    /// Requests answered per second over the window.
    pub(super) rate: f64,
    /// Fraction of the window the model worker ran batches.
    pub(super) busy: f64,
    /// Fraction of the short window the model worker ran batches.
    pub(super) busy_short: f64,
    /// Average pending inputs over the short window, if it has samples.
    pub(super) pending_average: Option<f64>,
    /// (quantile, seconds) of the latencies in the window.
    pub(super) quantiles: [(f64, f64); 3],
    /// Cumulative latency sum and count, the summary's `_sum` and `_count`.
    pub(super) latency_sum: f64,
    pub(super) latency_count: u64,
}

/// Items pushed since the last fold, behind a lock held O(1) by every user.
struct Inbox<T> {
    items: Mutex<VecDeque<T>>,
}

impl<T> Inbox<T> {
    fn new() -> Self {
        Self {
            items: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, item: T) {
        let mut items = self.lock();
        if items.len() >= WINDOW_CAPACITY {
            items.pop_front();
        }
        items.push_back(item);
    }

    /// Swaps the inbox with `spare` (emptied first), so the caller holds what was pushed and
    /// the inbox keeps an allocated buffer: the lock is held for the swap only.
    fn take_into(&self, spare: &mut VecDeque<T>) {
        spare.clear();
        std::mem::swap(&mut *self.lock(), spare);
    }
}

/// Latencies also carry the cumulative sum and count, updated with each push.
#[derive(Default)]
struct LatencyInbox {
    samples: VecDeque<(Instant, f64)>,
    sum: f64,
    count: u64,
}

/// The window itself; only folds (scrapes, the periodic sampler) touch it.
struct Folded {
    latencies: VecDeque<(Instant, f64)>,
    busy: VecDeque<(Instant, Instant)>,
    pending: VecDeque<(Instant, i64)>,
    latency_sum: f64,
    latency_count: u64,
    /// Buffers swapped with the inboxes, kept to reuse their allocations.
    spare_latencies: VecDeque<(Instant, f64)>,
    spare_busy: VecDeque<(Instant, Instant)>,
    spare_pending: VecDeque<(Instant, i64)>,
    /// Copy of the window's latencies, sorted outside the lock.
    sorted: Vec<f64>,
}

pub(super) struct SlidingWindow {
    span: Duration,
    short: Duration,
    started: Instant,
    latencies: Mutex<LatencyInbox>,
    busy: Inbox<(Instant, Instant)>,
    pending: Inbox<(Instant, i64)>,
    folded: Mutex<Folded>,
}

impl SlidingWindow {
    pub(super) fn new(span: Duration, short: Duration) -> Self {
        Self {
            span,
            short,
            started: Instant::now(),
            latencies: Mutex::new(LatencyInbox::default()),
            busy: Inbox::new(),
            pending: Inbox::new(),
            folded: Mutex::new(Folded {
                latencies: VecDeque::new(),
                busy: VecDeque::new(),
                pending: VecDeque::new(),
                latency_sum: 0.0,
                latency_count: 0,
                spare_latencies: VecDeque::new(),
                spare_busy: VecDeque::new(),
                spare_pending: VecDeque::new(),
                sorted: Vec::new(),
            }),
        }
    }

    pub(super) fn push_latency(&self, seconds: f64) {
        let mut inbox = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if inbox.samples.len() >= WINDOW_CAPACITY {
            inbox.samples.pop_front();
        }
        inbox.samples.push_back((Instant::now(), seconds));
        inbox.sum += seconds;
        inbox.count += 1;
    }

    pub(super) fn push_busy(&self, started: Instant, ended: Instant) {
        self.busy.push((started, ended));
    }

    pub(super) fn push_pending(&self, pending: i64) {
        self.pending.push((Instant::now(), pending.max(0)));
    }

    /// Folds the inboxes into the window unless a scrape is doing it right now; called
    /// periodically so the inboxes stay small between scrapes.
    pub(super) fn try_fold(&self) {
        if let Ok(mut folded) = self.folded.try_lock() {
            self.fold(&mut folded, Instant::now());
        }
    }

    /// Brings the window up to date and computes its gauges; a scrape calls it.
    pub(super) fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let mut snapshot = Snapshot::default();
        let mut sorted = {
            let mut folded = self.folded.lock().unwrap_or_else(PoisonError::into_inner);
            self.fold(&mut folded, now);
            let cutoff = self.since(now, self.span);
            let short_cutoff = self.since(now, self.short);
            snapshot.busy = busy_since(&folded.busy, cutoff, now);
            snapshot.busy_short = busy_since(&folded.busy, short_cutoff, now);
            snapshot.pending_average = (!folded.pending.is_empty()).then(|| {
                folded.pending.iter().map(|(_, p)| *p as f64).sum::<f64>()
                    / folded.pending.len() as f64
            });
            // Until the server has run for a whole window, divide by the time it has run.
            let covered = now.duration_since(cutoff).as_secs_f64().max(1e-3);
            snapshot.rate = folded.latencies.len() as f64 / covered;
            snapshot.latency_sum = folded.latency_sum;
            snapshot.latency_count = folded.latency_count;
            let mut sorted = std::mem::take(&mut folded.sorted);
            sorted.clear();
            sorted.extend(folded.latencies.iter().map(|(_, l)| *l));
            sorted
        };
        sorted.sort_unstable_by(f64::total_cmp);
        for (slot, q) in snapshot.quantiles.iter_mut().zip(QUANTILES) {
            *slot = (q, quantile(&sorted, q));
        }
        // Give the buffer back for the next scrape (a concurrent one may have made its own).
        if let Ok(mut folded) = self.folded.try_lock() {
            folded.sorted = sorted;
        }
        snapshot
    }

    /// `now - span`, but not before the window started.
    fn since(&self, now: Instant, span: Duration) -> Instant {
        now.checked_sub(span)
            .unwrap_or(self.started)
            .max(self.started)
    }

    /// Moves what the inboxes hold into the window and drops what fell out of it.
    fn fold(&self, folded: &mut Folded, now: Instant) {
        let Folded {
            latencies,
            busy,
            pending,
            latency_sum,
            latency_count,
            spare_latencies,
            spare_busy,
            spare_pending,
            ..
        } = folded;
        {
            spare_latencies.clear();
            let mut inbox = self
                .latencies
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut inbox.samples, spare_latencies);
            *latency_sum = inbox.sum;
            *latency_count = inbox.count;
        }
        append_bounded(latencies, spare_latencies);
        self.busy.take_into(spare_busy);
        append_bounded(busy, spare_busy);
        self.pending.take_into(spare_pending);
        append_bounded(pending, spare_pending);

        let cutoff = self.since(now, self.span);
        let short_cutoff = self.since(now, self.short);
        while latencies.front().is_some_and(|(t, _)| *t < cutoff) {
            latencies.pop_front();
        }
        let keep_busy_from = cutoff.min(short_cutoff);
        while busy.front().is_some_and(|(_, end)| *end < keep_busy_from) {
            busy.pop_front();
        }
        while pending.front().is_some_and(|(t, _)| *t < short_cutoff) {
            pending.pop_front();
        }
    }
}

/// Moves `new` onto the end of `window`, dropping the oldest past the capacity.
fn append_bounded<T>(window: &mut VecDeque<T>, new: &mut VecDeque<T>) {
    window.extend(new.drain(..));
    let excess = window.len().saturating_sub(WINDOW_CAPACITY);
    window.drain(..excess);
}

/// The fraction of `from..now` covered by the batches in `busy`.
fn busy_since(busy: &VecDeque<(Instant, Instant)>, from: Instant, now: Instant) -> f64 {
    let covered = now.duration_since(from).as_secs_f64().max(1e-3);
    let time: f64 = busy
        .iter()
        .map(|(s, e)| e.saturating_duration_since((*s).max(from)).as_secs_f64())
        .sum();
    (time / covered).min(1.0)
}

/// Nearest-rank quantile of sorted values; 0 when there are none.
pub(super) fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn inboxes_and_window_stay_bounded_without_scrapes() {
        let window = SlidingWindow::new(Duration::from_secs(600), Duration::from_secs(10));
        for i in 0..(WINDOW_CAPACITY + 10) {
            window.push_latency(i as f64);
        }
        assert_eq!(
            window.latencies.lock().unwrap().samples.len(),
            WINDOW_CAPACITY
        );
        let snapshot = window.snapshot();
        assert_eq!(snapshot.latency_count, (WINDOW_CAPACITY + 10) as u64);
        // The oldest ten went first.
        assert_eq!(
            snapshot.quantiles[0].1,
            (WINDOW_CAPACITY / 2 + 10) as f64 - 1.0
        );
    }

    #[test]
    fn a_periodic_fold_keeps_every_sample_for_the_next_scrape() {
        let window = SlidingWindow::new(Duration::from_secs(600), Duration::from_secs(10));
        for i in 1..=4 {
            window.push_latency(f64::from(i));
            window.try_fold();
        }
        let snapshot = window.snapshot();
        assert_eq!(snapshot.latency_count, 4);
        assert_eq!(snapshot.latency_sum, 10.0);
        assert_eq!(snapshot.quantiles[0], (0.5, 2.0));
        assert_eq!(snapshot.quantiles[2], (0.99, 4.0));
    }
}
