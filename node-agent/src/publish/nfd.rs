//! Node Feature Discovery "local" source: one features file that nfd-worker turns into
//! labels. Format (kubernetes-sigs/node-feature-discovery source/local/local.go):
//! `<name>[=<value>]` per line, `#` comments, `# +expiry-time=<RFC3339>` applying to the
//! lines after it, dot-files ignored, 64 KiB max. NFD has no annotations, so only the labels
//! are written; the diagnostics stay in the agent's logs, metrics and `probe` output.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::PublishError;
use crate::labels::{Desired, agent_version};

/// File name inside features.d.
pub const FEATURES_FILE: &str = "mshv-node-agent";
/// Default features.d directory of nfd-worker.
pub const DEFAULT_DIR: &str = "/etc/kubernetes/node-feature-discovery/features.d";

pub struct NfdPublisher {
    dir: PathBuf,
    /// How long the labels stay valid without a rewrite: three refresh periods, so a live
    /// agent never lets them lapse and a dead agent's labels go away. (Rewriting this local
    /// file is not an API write; nfd-worker updates the Node only when a label changes.)
    expire_after: Duration,
}

/// The file content (pure).
pub fn render(desired: &Desired, now: jiff::Timestamp, expiry: jiff::Timestamp) -> String {
    let whole = |t: jiff::Timestamp| jiff::Timestamp::from_second(t.as_second()).unwrap_or(t);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by mshv-node-agent {} at {}; rewritten on change and on every refresh.",
        agent_version(),
        whole(now)
    );
    let _ = writeln!(out, "# probe state: {}", desired.annotation.state);
    let _ = writeln!(out, "# +expiry-time={}", whole(expiry));
    for (key, value) in &desired.labels {
        let _ = writeln!(out, "{key}={value}");
    }
    out
}

/// Write `contents` to `dir/name` so readers only ever see the old or the new file: a
/// dot-file (ignored by NFD) in the same directory, fsync, rename over the target, fsync
/// the directory so the rename survives a crash.
pub fn write_atomic(dir: &Path, name: &str, contents: &str) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::File::open(dir)?.sync_all()
}

impl NfdPublisher {
    pub fn new(dir: impl Into<PathBuf>, expire_after: Duration) -> Self {
        Self {
            dir: dir.into(),
            expire_after,
        }
    }

    /// How often the file is rewritten when nothing changed: a third of its lifetime.
    pub fn refresh(&self) -> Duration {
        self.expire_after / 3
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FEATURES_FILE)
    }

    pub fn write(&self, desired: &Desired, now: jiff::Timestamp) -> Result<(), PublishError> {
        let span =
            jiff::SignedDuration::try_from(self.expire_after).unwrap_or(jiff::SignedDuration::MAX);
        let expiry = now.checked_add(span).unwrap_or(jiff::Timestamp::MAX);
        write_atomic(&self.dir, FEATURES_FILE, &render(desired, now, expiry)).map_err(|source| {
            PublishError::Io {
                path: self.path().display().to_string(),
                source,
            }
        })
    }

    /// Uninstall: remove the features file (absent is fine). Returns whether it existed.
    pub fn remove(&self) -> Result<bool, PublishError> {
        match fs::remove_file(self.path()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(PublishError::Io {
                path: self.path().display().to_string(),
                source,
            }),
        }
    }
}
