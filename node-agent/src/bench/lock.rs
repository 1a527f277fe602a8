//! One bench (or guest verification) at a time per node: an exclusive `flock` on a file
//! under the host root's run directory, released when the guard drops (or the process dies).

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use super::backend::BenchError;

/// `<host-root>/run/mshv-node-agent/bench.lock`: under the host root so a `bench` in a
/// container and one on the host contend for the same lock.
pub fn default_path(host_root: &Path) -> PathBuf {
    host_root.join("run/mshv-node-agent/bench.lock")
}

#[derive(Debug)]
pub struct BenchLock {
    _file: Option<File>,
}

impl BenchLock {
    /// No lock (where the lock file cannot be created at all).
    pub fn none() -> Self {
        Self { _file: None }
    }
}

/// Take the lock without waiting: a second bench is refused at once (`Busy`), never queued.
pub fn acquire(path: &Path) -> Result<BenchLock, BenchError> {
    let shown = path.display().to_string();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            BenchError::Other(format!(
                "cannot create the lock directory {}: {}",
                dir.display(),
                crate::probe::sys::errno_name(e.raw_os_error().unwrap_or(libc::EIO))
            ))
        })?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| {
            BenchError::Other(format!(
                "cannot open the lock file {shown}: {}",
                crate::probe::sys::errno_name(e.raw_os_error().unwrap_or(libc::EIO))
            ))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(BenchLock { _file: Some(file) }),
        Err(TryLockError::WouldBlock) => Err(BenchError::Busy { path: shown }),
        Err(TryLockError::Error(e)) => Err(BenchError::Other(format!(
            "cannot lock {shown}: {}",
            crate::probe::sys::errno_name(e.raw_os_error().unwrap_or(libc::EIO))
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let path = default_path(dir.path());
        let first = acquire(&path).unwrap();
        assert!(matches!(acquire(&path), Err(BenchError::Busy { .. })));
        drop(first);
        assert!(acquire(&path).is_ok());
    }
}
