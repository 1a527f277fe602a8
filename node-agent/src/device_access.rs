//! Makes the host's `/dev/mshv` usable by KubeVirt's qemu user (uid/gid 107).
//!
//! The driver registers the node `0600 root:root` (misc device default), but virt-launcher's
//! qemu runs as uid 107. kubelet's device plugin path only adds the node to the container's
//! device cgroup and bind-mounts it: the file mode still decides. KubeVirt itself fixes
//! this for its hypervisor device with `chmod o+rw` in the node labeller
//! (kubevirt/kubevirt cmd/virt-launcher/node-labeller/node-labeller.sh:38-39); the agent
//! does the same on the HOST node (under `--host-root`), so launchers that get `/dev/mshv`
//! from this agent's device plugin can open it.
//!
//! Pure decision ([`plan`]) over the [`Sys`] seam, so every errno is testable with fakes.
//! Run on every probe tick: idempotent (nothing is written when the node is already right),
//! and a node re-created by udev or a module reload (back to 0600) is fixed on the next tick.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::probe::sys::{FileAccess, NodeKind, Sys, errno_name};

/// KubeVirt's qemu user and group (virt-launcher runs qemu as 107:107).
pub const QEMU_ID: u32 = 107;

/// What the agent should make of the device node's permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Exact permission bits to set (`None`: leave the mode alone).
    pub mode: Option<u32>,
    /// Group to own the node (`None`: leave the group alone).
    pub group: Option<u32>,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self {
            mode: Some(DEFAULT_MODE),
            group: None,
        }
    }
}

/// `crw-rw-rw-`, as `chmod o+rw` leaves a 0660 node and as /dev/kvm usually is.
pub const DEFAULT_MODE: u32 = 0o666;

/// Result label of `mshv_node_agent_device_access_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessResult {
    Applied,
    Unchanged,
    Error,
}

impl AccessResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Error => "error",
        }
    }
}

/// What one pass did, for logs, metrics, `/status` and `probe`. The default is "nothing read,
/// nothing done".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct AccessReport {
    /// `None` when the node is absent (nothing to do, nothing counted).
    pub result: Option<AccessResult>,
    /// One line for people, e.g. "mode 0600 → 0666 applied" or "not applied: EROFS".
    pub detail: String,
    /// Mode and owner after the pass (`None` when the node could not be read).
    pub mode: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// uid/gid 107 can read and write the node now.
    pub accessible: bool,
    pub errno_name: Option<String>,
    pub inode: Option<u64>,
}

/// Changes needed to go from `now` to `policy` (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    pub chmod: Option<u32>,
    pub chgrp: Option<u32>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.chmod.is_none() && self.chgrp.is_none()
    }
}

pub fn plan(now: &FileAccess, policy: &AccessPolicy) -> Plan {
    Plan {
        chmod: policy.mode.filter(|m| *m & 0o7777 != now.mode),
        chgrp: policy.group.filter(|g| *g != now.gid),
    }
}

/// Can uid 107 / gid 107 read and write a node with this mode and owner? (The classic
/// owner/group/other check; ACLs and LSMs are out of scope.)
pub fn accessible_by_qemu(a: &FileAccess) -> bool {
    let rw = |bits: u32| bits & 0o6 == 0o6;
    if a.uid == QEMU_ID {
        return rw(a.mode >> 6);
    }
    if a.gid == QEMU_ID {
        return rw(a.mode >> 3);
    }
    rw(a.mode)
}

struct Mode(u32);

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// One pass over `path` (already prefixed with the host root).
pub fn apply<S: Sys>(sys: &S, path: &Path, policy: &AccessPolicy) -> AccessReport {
    let before = match sys.file_access(path) {
        Ok(a) => a,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return AccessReport {
                detail: format!("{} is absent: nothing to change", path.display()),
                ..AccessReport::default()
            };
        }
        Err(e) => return failed(path, None, "stat", &e),
    };
    if before.kind != NodeKind::CharDevice {
        // Never chmod a regular file or directory someone put at the device's path.
        return AccessReport {
            result: Some(AccessResult::Error),
            detail: format!("not applied: {} is not a character device", path.display()),
            ..report_of(&before)
        };
    }
    let todo = plan(&before, policy);
    if todo.is_empty() {
        return AccessReport {
            result: Some(AccessResult::Unchanged),
            detail: format!(
                "mode {} owner {}:{} already as configured",
                Mode(before.mode),
                before.uid,
                before.gid
            ),
            ..report_of(&before)
        };
    }
    let mut done = Vec::new();
    if let Some(gid) = todo.chgrp {
        if let Err(e) = sys.chown(path, None, Some(gid)) {
            return failed(path, Some(&before), "chown", &e);
        }
        done.push(format!("group {} → {gid}", before.gid));
    }
    if let Some(mode) = todo.chmod {
        if let Err(e) = sys.chmod(path, mode) {
            return failed(path, Some(&before), "chmod", &e);
        }
        done.push(format!("mode {} → {}", Mode(before.mode), Mode(mode)));
    }
    // Read back: what counts is what the node says now (a no-op chmod on some
    // filesystems, or a concurrent udev rule, would show here).
    let after = sys.file_access(path).unwrap_or(FileAccess {
        mode: todo.chmod.unwrap_or(before.mode),
        gid: todo.chgrp.unwrap_or(before.gid),
        ..before
    });
    AccessReport {
        result: Some(AccessResult::Applied),
        detail: format!("{} applied", done.join(", ")),
        ..report_of(&after)
    }
}

fn report_of(a: &FileAccess) -> AccessReport {
    AccessReport {
        result: None,
        detail: String::new(),
        mode: Some(Mode(a.mode).to_string()),
        uid: Some(a.uid),
        gid: Some(a.gid),
        accessible: a.kind == NodeKind::CharDevice && accessible_by_qemu(a),
        errno_name: None,
        inode: Some(a.ino),
    }
}

fn failed(path: &Path, before: Option<&FileAccess>, op: &str, e: &std::io::Error) -> AccessReport {
    let name = e
        .raw_os_error()
        .map(errno_name)
        .unwrap_or_else(|| e.kind().to_string());
    let base = before.map(report_of).unwrap_or_default();
    AccessReport {
        result: Some(AccessResult::Error),
        detail: format!("not applied: {op} {}: {name}", path.display()),
        errno_name: Some(name),
        ..base
    }
}

/// Read-only view for `probe`: the node's mode and owner, whether qemu can use it, and
/// what `run` with `policy` would change. Never writes.
pub fn inspect<S: Sys>(sys: &S, path: &Path, policy: &AccessPolicy) -> AccessReport {
    match sys.file_access(path) {
        Ok(a) => {
            let todo = plan(&a, policy);
            let verdict = if accessible_by_qemu(&a) {
                "uid/gid 107 can read+write it"
            } else {
                "uid/gid 107 cannot read+write it"
            };
            let action = match (todo.chmod, todo.chgrp) {
                (None, None) => "`run` changes nothing".to_string(),
                (m, g) => {
                    let mut parts = Vec::new();
                    if let Some(g) = g {
                        parts.push(format!("group {} → {g}", a.gid));
                    }
                    if let Some(m) = m {
                        parts.push(format!("mode {} → {}", Mode(a.mode), Mode(m)));
                    }
                    format!("`run` would apply {}", parts.join(", "))
                }
            };
            AccessReport {
                detail: format!(
                    "mode {} owner {}:{}; {verdict}; {action}",
                    Mode(a.mode),
                    a.uid,
                    a.gid
                ),
                ..report_of(&a)
            }
        }
        Err(e) => {
            let mut r = failed(path, None, "stat", &e);
            r.result = None;
            r.detail = if e.kind() == std::io::ErrorKind::NotFound {
                format!("{} is absent: nothing to change", path.display())
            } else {
                format!(
                    "{}: {}",
                    path.display(),
                    r.errno_name.clone().unwrap_or_default()
                )
            };
            r
        }
    }
}

/// `--device-mode`: permission bits, or `keep` (leave the mode alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMode(pub Option<u32>);

impl std::str::FromStr for DeviceMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_mode(s).map(Self)
    }
}

impl fmt::Display for DeviceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(m) => write!(f, "{}", Mode(m)),
            None => f.write_str("keep"),
        }
    }
}

/// Parse `--device-mode`: an octal mode (`0666`, `666`, `0o666`) or `keep`.
pub fn parse_mode(s: &str) -> Result<Option<u32>, String> {
    if s == "keep" {
        return Ok(None);
    }
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("{s:?} is not an octal mode (e.g. 0666) or `keep`"))?;
    if mode > 0o777 {
        return Err(format!(
            "{s:?}: only permission bits (at most 0777) may be set on a device node"
        ));
    }
    Ok(Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(mode: u32, uid: u32, gid: u32) -> FileAccess {
        FileAccess {
            kind: NodeKind::CharDevice,
            mode,
            uid,
            gid,
            ino: 1,
        }
    }

    #[test]
    fn qemu_access_follows_owner_group_other() {
        assert!(!accessible_by_qemu(&node(0o600, 0, 0)));
        assert!(accessible_by_qemu(&node(0o666, 0, 0)));
        assert!(accessible_by_qemu(&node(0o606, 0, 0)));
        assert!(accessible_by_qemu(&node(0o660, 0, QEMU_ID)));
        assert!(
            !accessible_by_qemu(&node(0o606, 0, QEMU_ID)),
            "group bits win"
        );
        assert!(accessible_by_qemu(&node(0o600, QEMU_ID, 0)));
        assert!(!accessible_by_qemu(&node(0o644, 0, 0)));
    }

    #[test]
    fn plan_changes_only_what_differs() {
        let p = AccessPolicy::default();
        assert_eq!(plan(&node(0o666, 0, 0), &p), Plan::default());
        assert_eq!(plan(&node(0o600, 0, 0), &p).chmod, Some(0o666));
        let g = AccessPolicy {
            mode: None,
            group: Some(QEMU_ID),
        };
        assert_eq!(
            plan(&node(0o600, 0, 0), &g),
            Plan {
                chmod: None,
                chgrp: Some(QEMU_ID)
            }
        );
    }

    #[test]
    fn modes_parse() {
        assert_eq!(parse_mode("0666"), Ok(Some(0o666)));
        assert_eq!(parse_mode("660"), Ok(Some(0o660)));
        assert_eq!(parse_mode("0o606"), Ok(Some(0o606)));
        assert_eq!(parse_mode("keep"), Ok(None));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("4777").is_err());
        assert!(parse_mode("rw").is_err());
    }
}
