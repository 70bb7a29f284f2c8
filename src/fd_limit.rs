//! The open-file limit. Every client connection is a file descriptor, so at start-up wick
//! raises its soft limit to the hard one (as nginx and most servers do) and keeps the
//! connection cap below it: past the cap a client gets a 503, never an accept failure.

use rlimit::Resource;

/// Descriptors kept out of the connection cap: listeners, the metrics port's connections,
/// model files, logs, the runtime.
const RESERVED: u64 = 128;

/// Raises the soft limit on open files to the hard limit, logging the change; returns the
/// limit now in force, `None` where it cannot be read.
fn raise() -> Option<u64> {
    let (before, hard) = rlimit::getrlimit(Resource::NOFILE).ok()?;
    match rlimit::increase_nofile_limit(hard) {
        Ok(now) => {
            if now > before {
                tracing::info!(from = before, to = now, "raised the open-file limit");
            }
            Some(now)
        }
        Err(e) => {
            tracing::warn!(error = %e, limit = before, "cannot raise the open-file limit");
            Some(before)
        }
    }
}

/// `requested` (--max-connections), lowered where the open-file limit could not hold it.
pub fn connection_cap(requested: usize) -> usize {
    let Some(limit) = raise() else {
        return requested;
    };
    let fits = usize::try_from(limit.saturating_sub(RESERVED).max(1)).unwrap_or(usize::MAX);
    if requested > fits {
        tracing::warn!(
            requested,
            open_file_limit = limit,
            cap = fits,
            "--max-connections lowered to fit the open-file limit"
        );
        return fits;
    }
    requested
}
