//! The probe ladder: least intrusive first, each step a row in the report.
//!
//! 1. `cpuid`       — partition type and hypervisor build (unprivileged, no syscalls).
//! 2. `proc-misc`   — is the `mshv` misc driver registered (`/proc/misc`)?
//! 3. `sysfs`       — `/sys/class/misc/mshv/dev`, the authoritative device numbers.
//! 4. `device`      — `/dev/mshv` is a character device with exactly those numbers.
//! 5. `open`        — open it read-only.
//! 6. `fingerprint` — `MSHV_CREATE_PARTITION` with an out-of-range `pt_isolation`: the
//!    mainline driver rejects it with EINVAL before any hypercall, so nothing is created.
//! 7. `self-query`  — optional read-only `HVCALL_GET_PARTITION_PROPERTY` on the device fd
//!    (newer kernels); ENOTTY is normal and never makes a node incapable.
//!
//! The first failing step decides the state; the read-only file steps still run after a
//! CPUID verdict so the table shows the whole picture, but `open` and the ioctls only run
//! when nothing has ruled the node out yet.

pub mod cpuid;
pub mod hv_build;
pub mod procfs;
pub mod render;
pub mod sys;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use cpuid::PartitionType;
use cpuid::{HvInfo, Identity};
use sys::{Device, NodeInfo, NodeKind, Sys, errno_name};

/// The fixed vocabulary of probe outcomes (also the `state` in JSON, metrics and labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Capable,
    NotHyperv,
    NotParentPartition,
    DriverAbsent,
    DeviceAbsent,
    DeviceStale,
    PermissionDenied,
    UnknownAbi,
    Error,
}

impl State {
    pub const ALL: [State; 9] = [
        State::Capable,
        State::NotHyperv,
        State::NotParentPartition,
        State::DriverAbsent,
        State::DeviceAbsent,
        State::DeviceStale,
        State::PermissionDenied,
        State::UnknownAbi,
        State::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Capable => "capable",
            State::NotHyperv => "not-hyperv",
            State::NotParentPartition => "not-parent-partition",
            State::DriverAbsent => "driver-absent",
            State::DeviceAbsent => "device-absent",
            State::DeviceStale => "device-stale",
            State::PermissionDenied => "permission-denied",
            State::UnknownAbi => "unknown-abi",
            State::Error => "error",
        }
    }

    /// One sentence for people: what this state means.
    pub fn meaning(self) -> &'static str {
        match self {
            State::Capable => {
                "/dev/mshv is live and speaks the mainline ioctl ABI: this node can run MSHV guests"
            }
            State::NotHyperv => {
                "the kernel does not run on Microsoft Hypervisor (bare metal or another hypervisor)"
            }
            State::NotParentPartition => {
                "the kernel runs on Hyper-V as an ordinary guest: it lacks the CreatePartitions privilege (or is an isolated/confidential VM)"
            }
            State::DriverAbsent => {
                "this is a Hyper-V parent partition, but the mshv_root driver is not registered (no mshv in /proc/misc)"
            }
            State::DeviceAbsent => {
                "the driver is registered, but /dev/mshv does not exist under the host root"
            }
            State::DeviceStale => {
                "/dev/mshv exists but is not the live driver's character device (wrong type or numbers, or no driver behind it)"
            }
            State::PermissionDenied => {
                "opening or using /dev/mshv was refused (EACCES: file mode; EPERM: device cgroup or LSM)"
            }
            State::UnknownAbi => {
                "/dev/mshv answers, but not with the mainline ioctl ABI this agent knows"
            }
            State::Error => {
                "the probe could not finish: an unexpected errno, an unreadable /proc, or a bad --host-root"
            }
        }
    }

    /// What a person should do about it.
    pub fn action(self) -> &'static str {
        match self {
            State::Capable => "nothing",
            State::NotHyperv => {
                "expected on non-Hyper-V nodes; for MSHV use a Hyper-V root or an Azure L1VH-capable VM"
            }
            State::NotParentPartition => {
                "use a node Hyper-V runs as root or L1VH partition; an ordinary Hyper-V/Azure guest cannot create partitions"
            }
            State::DriverAbsent => {
                "load the driver (modprobe mshv_root; needs CONFIG_MSHV_ROOT, Linux >= 6.15 or a backport) and check dmesg for mshv"
            }
            State::DeviceAbsent => {
                "in a container mount the host /dev at <host-root>/dev; on the host check udev or mknod /dev/mshv c 10 <minor from /proc/misc>"
            }
            State::DeviceStale => {
                "recreate the node from /sys/class/misc/mshv/dev (udevadm trigger, or rm + mknod); restart pods whose /dev is a snapshot"
            }
            State::PermissionDenied => {
                "run as root in a privileged container (the DaemonSet does); check SELinux/AppArmor denials"
            }
            State::UnknownAbi => {
                "use a kernel with the mainline mshv uapi (Linux >= 6.15 or a backport of it)"
            }
            State::Error => {
                "read the step details and errno; check the --host-root mounts; share `probe --json` output"
            }
        }
    }

    /// Process exit code of `probe`: 0 capable, 1 not capable, 2 probe error.
    pub fn exit_code(self) -> u8 {
        match self {
            State::Capable => 0,
            State::Error => 2,
            _ => 1,
        }
    }
}

/// The ABI level the device answered with. There is no version ioctl: this is inferred
/// from which of the two known ioctls the device accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Uapi {
    /// `MSHV_CREATE_PARTITION` validates its arguments like mainline (Linux 6.15+).
    Mainline,
    /// Mainline plus `MSHV_ROOT_HVCALL` self queries on /dev/mshv (newer kernels).
    MainlineHvcall,
    /// The device did not behave like any ABI known here.
    Unknown,
}

impl Uapi {
    pub fn as_str(self) -> &'static str {
        match self {
            Uapi::Mainline => "mainline",
            Uapi::MainlineHvcall => "mainline-hvcall",
            Uapi::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepName {
    HostRoot,
    Cpuid,
    ProcMisc,
    Sysfs,
    Device,
    Open,
    Fingerprint,
    SelfQuery,
}

impl StepName {
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::HostRoot => "host-root",
            StepName::Cpuid => "cpuid",
            StepName::ProcMisc => "proc-misc",
            StepName::Sysfs => "sysfs",
            StepName::Device => "device",
            StepName::Open => "open",
            StepName::Fingerprint => "fingerprint",
            StepName::SelfQuery => "self-query",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Warn,
    Info,
    Skip,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "ok",
            Outcome::Fail => "FAIL",
            Outcome::Warn => "warn",
            Outcome::Info => "info",
            Outcome::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: StepName,
    pub result: Outcome,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// True when the ioctl result was reused from an earlier probe of the same device node.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeviceNumbers {
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub capable: bool,
    pub state: State,
    /// Why: the detail of the deciding step.
    pub reason: String,
    pub action: String,
    pub partition_type: PartitionType,
    pub hv_vendor: Option<String>,
    pub hv_build: Option<u32>,
    pub hv_version: Option<String>,
    /// The build against the mainline driver's validated range (parent partitions only).
    pub hv_build_check: Option<hv_build::HvBuildCheck>,
    pub uapi: Option<Uapi>,
    /// errno of the deciding syscall (EINVAL from the fingerprint when capable).
    pub errno: Option<i32>,
    pub errno_name: Option<String>,
    pub device: Option<DeviceNumbers>,
    /// HV_PARTITION_PROPERTY_PRIVILEGE_FLAGS of the host partition, when the self query worked.
    pub self_privileges: Option<String>,
    /// The fingerprint ioctl unexpectedly created a partition; its fd was closed at once.
    pub partition_created_and_closed: bool,
    pub kernel_release: Option<String>,
    pub host_root: String,
    pub steps: Vec<Step>,
    pub duration_us: u64,
}

#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Prefix of every host path (`/dev`, `/proc`, `/sys`).
    pub host_root: PathBuf,
    /// Run the optional read-only self partition-property query.
    pub self_query: bool,
    /// Reuse the ioctl results for the same device node for this long. Some downstream
    /// kernels log a line for every `MSHV_CREATE_PARTITION`, so the periodic loop should not
    /// repeat the fingerprint every cycle; file and open checks still run every time.
    pub fingerprint_max_age: Duration,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            host_root: PathBuf::from("/"),
            self_query: true,
            fingerprint_max_age: Duration::ZERO,
        }
    }
}

/// Raw ioctl outcomes, kept as plain data so they can be memoised between probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FingerprintRaw {
    Errno(i32),
    /// The ioctl returned a partition fd (already closed).
    Created,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SelfQueryRaw {
    NotRun,
    Value(u64),
    Errno { errno: i32, hv_status: u16 },
}

#[derive(Debug, Clone, Copy)]
struct Memo {
    identity: (u32, u32, u64),
    at: Instant,
    fingerprint: FingerprintRaw,
    self_query: SelfQueryRaw,
}

/// Runs the ladder; keeps the last ioctl results (see [`ProbeOptions::fingerprint_max_age`]).
pub struct Prober<S: Sys> {
    sys: S,
    opts: ProbeOptions,
    memo: Option<Memo>,
}

impl<S: Sys> Prober<S> {
    pub fn new(sys: S, opts: ProbeOptions) -> Self {
        Self {
            sys,
            opts,
            memo: None,
        }
    }

    pub fn options(&self) -> &ProbeOptions {
        &self.opts
    }

    pub fn sys(&self) -> &S {
        &self.sys
    }

    /// One probe. Never panics and never fails: every problem becomes a state.
    pub fn probe(&mut self) -> ProbeReport {
        let started = Instant::now();
        let mut ladder = Ladder::default();
        let root = self.opts.host_root.clone();
        let mut report = ProbeReport {
            capable: false,
            state: State::Error,
            reason: String::new(),
            action: String::new(),
            partition_type: PartitionType::Unknown,
            hv_vendor: None,
            hv_build: None,
            hv_version: None,
            hv_build_check: None,
            uapi: None,
            errno: None,
            errno_name: None,
            device: None,
            self_privileges: None,
            partition_created_and_closed: false,
            kernel_release: None,
            host_root: root.display().to_string(),
            steps: Vec::new(),
            duration_us: 0,
        };

        if self.check_host_root(&root, &mut ladder) {
            self.run_ladder(&root, &mut ladder, &mut report);
        }

        let (state, reason, action, errno) = ladder.verdict();
        report.capable = state == State::Capable;
        report.state = state;
        report.reason = reason;
        report.action = action;
        report.errno = errno;
        report.errno_name = errno.map(errno_name);
        report.steps = ladder.steps;
        report.duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        report
    }

    fn check_host_root(&self, root: &Path, ladder: &mut Ladder) -> bool {
        match self.sys.stat(root) {
            Ok(info) if info.kind == NodeKind::Directory => true,
            Ok(_) => {
                ladder.fail(
                    StepName::HostRoot,
                    State::Error,
                    format!("--host-root {} is not a directory", root.display()),
                    None,
                );
                false
            }
            Err(e) => {
                ladder.fail(
                    StepName::HostRoot,
                    State::Error,
                    format!("--host-root {}: {}", root.display(), io_text(&e)),
                    e.raw_os_error(),
                );
                false
            }
        }
    }

    fn run_ladder(&mut self, root: &Path, ladder: &mut Ladder, report: &mut ProbeReport) {
        report.kernel_release = self
            .sys
            .read_to_string(&root.join("proc/sys/kernel/osrelease"))
            .ok()
            .map(|s| s.trim().chars().take(128).collect());

        self.step_cpuid(ladder, report);
        let misc_minor = self.step_proc_misc(root, ladder);
        let expected = self.step_sysfs(root, misc_minor, ladder);
        report.device = expected.map(|(major, minor)| DeviceNumbers { major, minor });
        let node = self.step_device(root, expected, ladder);

        let Some(node) = node else {
            ladder.skip(StepName::Open, "not attempted: no usable device node");
            ladder.skip(
                StepName::Fingerprint,
                "not attempted: no usable device node",
            );
            ladder.skip(StepName::SelfQuery, "not attempted: no usable device node");
            return;
        };
        if let Some(state) = ladder.decided_state() {
            let why = format!("not attempted: the node is already {}", state.as_str());
            ladder.skip(StepName::Open, &why);
            ladder.skip(StepName::Fingerprint, &why);
            ladder.skip(StepName::SelfQuery, &why);
            return;
        }
        self.step_open_and_ioctls(root, node, ladder, report);
    }

    fn step_cpuid(&self, ladder: &mut Ladder, report: &mut ProbeReport) {
        match cpuid::identify(|leaf| self.sys.cpuid(leaf)) {
            Identity::NoCpuid => {
                report.partition_type = PartitionType::Unknown;
                ladder.push(
                    StepName::Cpuid,
                    Outcome::Skip,
                    "no CPUID on this architecture: partition type unknown, relying on the device checks".into(),
                );
            }
            Identity::BareMetal => {
                report.partition_type = PartitionType::None;
                ladder.fail(
                    StepName::Cpuid,
                    State::NotHyperv,
                    "CPUID reports no hypervisor: bare metal".into(),
                    None,
                );
            }
            Identity::OtherHypervisor { vendor } => {
                report.partition_type = PartitionType::None;
                let detail = format!(
                    "hypervisor vendor is {vendor:?}, not \"Microsoft Hv\": not running on Microsoft Hypervisor"
                );
                report.hv_vendor = Some(vendor);
                ladder.fail(StepName::Cpuid, State::NotHyperv, detail, None);
            }
            Identity::HyperV(info) => {
                report.partition_type = info.partition_type;
                report.hv_vendor = Some(cpuid::HV_VENDOR.to_string());
                report.hv_build = Some(info.build);
                report.hv_version = Some(format!("{}.{}.{}", info.major, info.minor, info.build));
                // The driver only loads in parent partitions; a guest's build says nothing.
                if info.partition_type.is_parent() {
                    report.hv_build_check = Some(hv_build::check(info.build));
                }
                let detail = hv_detail(&info);
                if info.partition_type.is_parent() {
                    ladder.push(StepName::Cpuid, Outcome::Pass, detail);
                } else {
                    ladder.fail(StepName::Cpuid, State::NotParentPartition, detail, None);
                }
            }
        }
    }

    /// Returns the minor of `mshv` in /proc/misc.
    fn step_proc_misc(&self, root: &Path, ladder: &mut Ladder) -> Option<u32> {
        let path = root.join("proc/misc");
        match self.sys.read_to_string(&path) {
            Ok(text) => match procfs::misc_minor(&text, "mshv") {
                Some(minor) => {
                    ladder.push(
                        StepName::ProcMisc,
                        Outcome::Pass,
                        format!("mshv is registered as misc device 10:{minor}"),
                    );
                    Some(minor)
                }
                None => {
                    let module = root.join("sys/module/mshv_root");
                    let loaded = self.sys.stat(&module).is_ok();
                    let detail = if loaded {
                        "no mshv in /proc/misc although module mshv_root is loaded: it did not register the device (not a parent partition? see dmesg)".to_string()
                    } else {
                        "no mshv in /proc/misc and module mshv_root is not loaded".to_string()
                    };
                    ladder.fail(StepName::ProcMisc, State::DriverAbsent, detail, None);
                    None
                }
            },
            Err(e) => {
                let detail = format!(
                    "cannot read {}: {} (is the host /proc visible under --host-root?)",
                    path.display(),
                    io_text(&e)
                );
                ladder.fail(StepName::ProcMisc, State::Error, detail, e.raw_os_error());
                None
            }
        }
    }

    /// Returns the device numbers the node must carry: sysfs when readable, else 10:<misc minor>.
    fn step_sysfs(
        &self,
        root: &Path,
        misc_minor: Option<u32>,
        ladder: &mut Ladder,
    ) -> Option<(u32, u32)> {
        let path = root.join("sys/class/misc/mshv/dev");
        let from_misc = misc_minor.map(|m| (procfs::MISC_MAJOR, m));
        match self.sys.read_to_string(&path) {
            Ok(text) => match procfs::sysfs_dev_numbers(&text) {
                Ok(numbers) => match from_misc {
                    Some(expected) if expected != numbers => {
                        ladder.fail(
                            StepName::Sysfs,
                            State::Error,
                            format!(
                                "sysfs says {}:{} but /proc/misc says {}:{}: the two host views disagree (mixed mounts?)",
                                numbers.0, numbers.1, expected.0, expected.1
                            ),
                            None,
                        );
                        Some(numbers)
                    }
                    Some(_) => {
                        ladder.push(
                            StepName::Sysfs,
                            Outcome::Pass,
                            format!("/sys/class/misc/mshv/dev is {}:{}", numbers.0, numbers.1),
                        );
                        Some(numbers)
                    }
                    None => {
                        ladder.push(
                            StepName::Sysfs,
                            Outcome::Warn,
                            format!(
                                "sysfs lists mshv ({}:{}) but /proc/misc does not",
                                numbers.0, numbers.1
                            ),
                        );
                        None
                    }
                },
                Err(e) => {
                    ladder.push(
                        StepName::Sysfs,
                        Outcome::Warn,
                        format!("cannot parse {}: {e}", path.display()),
                    );
                    from_misc
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (outcome, detail) = match from_misc {
                    Some(_) => (
                        Outcome::Warn,
                        "no /sys/class/misc/mshv (is the host /sys mounted?); trusting /proc/misc",
                    ),
                    None => (Outcome::Info, "no /sys/class/misc/mshv"),
                };
                ladder.push(StepName::Sysfs, outcome, detail.into());
                from_misc
            }
            Err(e) => {
                ladder.push(
                    StepName::Sysfs,
                    Outcome::Warn,
                    format!("cannot read {}: {}", path.display(), io_text(&e)),
                );
                from_misc
            }
        }
    }

    fn step_device(
        &self,
        root: &Path,
        expected: Option<(u32, u32)>,
        ladder: &mut Ladder,
    ) -> Option<NodeInfo> {
        let path = root.join("dev/mshv");
        let shown = path.display();
        match self.sys.stat(&path) {
            Err(e) => {
                let errno = e.raw_os_error();
                let (state, detail) = match errno {
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) => (
                        State::DeviceAbsent,
                        match expected {
                            Some((ma, mi)) => format!(
                                "{shown} does not exist although the driver is {ma}:{mi} (container /dev snapshot, or udev did not create it)"
                            ),
                            None => format!("{shown} does not exist"),
                        },
                    ),
                    Some(libc::EACCES) => (
                        State::PermissionDenied,
                        format!("stat {shown}: permission denied on the path"),
                    ),
                    _ => (State::Error, format!("stat {shown}: {}", io_text(&e))),
                };
                ladder.fail(StepName::Device, state, detail, errno);
                None
            }
            Ok(info) if info.kind != NodeKind::CharDevice => {
                let what = match info.kind {
                    NodeKind::Regular => "a regular file",
                    NodeKind::Directory => "a directory",
                    NodeKind::BlockDevice => "a block device",
                    _ => "not a device",
                };
                ladder.fail(
                    StepName::Device,
                    State::DeviceStale,
                    format!("{shown} is {what}, not a character device"),
                    None,
                );
                None
            }
            Ok(info) => match expected {
                Some((ma, mi)) if (info.major, info.minor) != (ma, mi) => {
                    ladder.fail(
                        StepName::Device,
                        State::DeviceStale,
                        format!(
                            "{shown} is char {}:{} but the driver is {ma}:{mi}: stale node (module reloaded?)",
                            info.major, info.minor
                        ),
                        None,
                    );
                    None
                }
                Some(_) => {
                    ladder.push(
                        StepName::Device,
                        Outcome::Pass,
                        format!("{shown} is char {}:{}", info.major, info.minor),
                    );
                    Some(info)
                }
                None => {
                    // Nothing to compare with (driver not listed, or arm64 without sysfs):
                    // the open and ioctl steps decide whether a driver is behind it.
                    ladder.push(
                        StepName::Device,
                        Outcome::Info,
                        format!(
                            "{shown} is char {}:{}; no driver numbers to compare with",
                            info.major, info.minor
                        ),
                    );
                    Some(info)
                }
            },
        }
    }

    fn step_open_and_ioctls(
        &mut self,
        root: &Path,
        node: NodeInfo,
        ladder: &mut Ladder,
        report: &mut ProbeReport,
    ) {
        let path = root.join("dev/mshv");
        let Some(device) = self.step_open(&path, ladder) else {
            return;
        };
        let (fingerprint, self_query, cached) = self.run_or_reuse_ioctls(&device, node);
        // Close /dev/mshv before reporting: nothing below needs it.
        drop(device);

        let live = self.report_fingerprint(fingerprint, cached, ladder, report);
        if !live {
            ladder.skip(
                StepName::SelfQuery,
                "not attempted: the fingerprint did not show a live mainline device",
            );
            return;
        }
        report.uapi = Some(Uapi::Mainline);
        if !self.opts.self_query {
            ladder.skip(StepName::SelfQuery, "disabled (--no-self-query)");
            return;
        }
        Self::report_self_query(self_query, cached, ladder, report);
    }

    /// Opens /dev/mshv read-only; on failure records why and skips the ioctl steps.
    fn step_open(&self, path: &Path, ladder: &mut Ladder) -> Option<S::Device> {
        match self.sys.open(path) {
            Ok(d) => {
                ladder.push(
                    StepName::Open,
                    Outcome::Pass,
                    "opened read-only (O_RDONLY|O_CLOEXEC|O_NONBLOCK)".into(),
                );
                Some(d)
            }
            Err(e) => {
                let errno = e.raw_os_error();
                let (state, detail) = match errno {
                    Some(libc::EACCES) => (
                        State::PermissionDenied,
                        "open: EACCES, the file mode denies access (the node is 0600 root: run as root)".to_string(),
                    ),
                    Some(libc::EPERM) => (
                        State::PermissionDenied,
                        "open: EPERM, the device cgroup or an LSM denies it (unprivileged container?)".to_string(),
                    ),
                    Some(libc::ENODEV) | Some(libc::ENXIO) => (
                        State::DeviceStale,
                        format!("open: {}, no driver behind this node (module unloaded?)", errno_name(errno.unwrap_or_default())),
                    ),
                    Some(libc::ENOENT) => (
                        State::DeviceAbsent,
                        "open: ENOENT, the node vanished between stat and open".to_string(),
                    ),
                    _ => (State::Error, format!("open: {}", io_text(&e))),
                };
                ladder.fail(StepName::Open, state, detail, errno);
                ladder.skip(StepName::Fingerprint, "not attempted: open failed");
                ladder.skip(StepName::SelfQuery, "not attempted: open failed");
                None
            }
        }
    }

    /// The fingerprint and self query results: the memo's when it is for this node and young
    /// enough (`cached` true), else fresh ones, which become the memo.
    fn run_or_reuse_ioctls(
        &mut self,
        device: &S::Device,
        node: NodeInfo,
    ) -> (FingerprintRaw, SelfQueryRaw, bool) {
        let identity = (node.major, node.minor, node.ino);
        let now = Instant::now();
        let reusable = self.memo.filter(|m| {
            m.identity == identity
                && now.saturating_duration_since(m.at) < self.opts.fingerprint_max_age
        });
        match reusable {
            Some(m) => (m.fingerprint, m.self_query, true),
            None => {
                let fp = run_fingerprint(device);
                let sq = if self.opts.self_query && fp == FingerprintRaw::Errno(libc::EINVAL) {
                    run_self_query(device)
                } else {
                    SelfQueryRaw::NotRun
                };
                self.memo = Some(Memo {
                    identity,
                    at: now,
                    fingerprint: fp,
                    self_query: sq,
                });
                (fp, sq, false)
            }
        }
    }

    /// Records the self query row on a live mainline device.
    fn report_self_query(
        self_query: SelfQueryRaw,
        cached: bool,
        ladder: &mut Ladder,
        report: &mut ProbeReport,
    ) {
        match self_query {
            SelfQueryRaw::NotRun => ladder.skip(StepName::SelfQuery, "not run"),
            SelfQueryRaw::Value(v) => {
                report.uapi = Some(Uapi::MainlineHvcall);
                report.self_privileges = Some(format!("{v:#018x}"));
                ladder.push_cached(
                    StepName::SelfQuery,
                    Outcome::Pass,
                    format!("MSHV_ROOT_HVCALL on /dev/mshv works: host privilege flags {v:#018x}"),
                    None,
                    cached,
                );
            }
            SelfQueryRaw::Errno { errno, .. } if errno == libc::ENOTTY => ladder.push_cached(
                StepName::SelfQuery,
                Outcome::Info,
                "ENOTTY: this kernel takes no MSHV_ROOT_HVCALL on /dev/mshv (normal before the self-hvcall kernels)".into(),
                Some(errno),
                cached,
            ),
            SelfQueryRaw::Errno { errno, hv_status } => ladder.push_cached(
                StepName::SelfQuery,
                Outcome::Warn,
                format!(
                    "self property query failed with {} (hypervisor status {hv_status:#06x}); does not affect capability",
                    errno_name(errno)
                ),
                Some(errno),
                cached,
            ),
        }
    }

    /// Records the fingerprint row; true when the device is live (EINVAL).
    fn report_fingerprint(
        &self,
        raw: FingerprintRaw,
        cached: bool,
        ladder: &mut Ladder,
        report: &mut ProbeReport,
    ) -> bool {
        match raw {
            FingerprintRaw::Errno(libc::EINVAL) => {
                ladder.push_cached(
                    StepName::Fingerprint,
                    Outcome::Pass,
                    "MSHV_CREATE_PARTITION(pt_isolation=u64::MAX) -> EINVAL: the mainline ioctl is live (argument check, no hypercall)".into(),
                    Some(libc::EINVAL),
                    cached,
                );
                true
            }
            FingerprintRaw::Errno(errno) => {
                let (state, detail) = match errno {
                    libc::ENOTTY => (
                        State::UnknownAbi,
                        "MSHV_CREATE_PARTITION (0x4010B800) -> ENOTTY: this /dev/mshv has another ioctl ABI (older or out-of-tree driver)".to_string(),
                    ),
                    libc::EPERM | libc::EACCES => (
                        State::PermissionDenied,
                        format!("MSHV_CREATE_PARTITION -> {}: an LSM or the device cgroup blocks the ioctl", errno_name(errno)),
                    ),
                    libc::ENODEV | libc::ENXIO => (
                        State::DeviceStale,
                        format!("MSHV_CREATE_PARTITION -> {}: no driver behind the fd", errno_name(errno)),
                    ),
                    libc::EIO => (
                        State::Error,
                        "MSHV_CREATE_PARTITION -> EIO: the hypervisor refused a call the mainline driver never makes for these arguments".to_string(),
                    ),
                    _ => (
                        State::Error,
                        format!("MSHV_CREATE_PARTITION -> {} ({})", errno_name(errno), io_text(&io::Error::from_raw_os_error(errno))),
                    ),
                };
                report.uapi = (state == State::UnknownAbi).then_some(Uapi::Unknown);
                ladder.fail_cached(StepName::Fingerprint, state, detail, Some(errno), cached);
                false
            }
            FingerprintRaw::Created => {
                report.partition_created_and_closed = true;
                report.uapi = Some(Uapi::Unknown);
                ladder.fail_cached(
                    StepName::Fingerprint,
                    State::UnknownAbi,
                    "MSHV_CREATE_PARTITION with an invalid isolation type SUCCEEDED: a partition was created and its fd closed at once; this driver does not validate like mainline".into(),
                    None,
                    cached,
                );
                false
            }
        }
    }
}

fn run_fingerprint<D: Device>(device: &D) -> FingerprintRaw {
    match device.create_partition(&sys::FINGERPRINT_ARGS) {
        Ok(fd) => {
            // Closing the partition fd releases the only reference, which deletes the
            // partition in the hypervisor (mshv_partition_release). Do it before anything else.
            drop(fd);
            FingerprintRaw::Created
        }
        Err(e) => FingerprintRaw::Errno(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

fn run_self_query<D: Device>(device: &D) -> SelfQueryRaw {
    let out = device.self_partition_property(sys::HV_PARTITION_PROPERTY_PRIVILEGE_FLAGS);
    match out.result {
        Ok(v) => SelfQueryRaw::Value(v),
        Err(e) => SelfQueryRaw::Errno {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
            hv_status: out.hv_status,
        },
    }
}

fn hv_detail(info: &HvInfo) -> String {
    let kind = match info.partition_type {
        PartitionType::Root => "root partition (CreatePartitions + CpuManagement)".to_string(),
        PartitionType::L1vh => "L1VH partition (CreatePartitions, no CpuManagement)".to_string(),
        _ if info.isolated => "isolated (confidential) guest: Isolation privilege set".to_string(),
        _ => "guest partition: no CreatePartitions privilege".to_string(),
    };
    format!(
        "Microsoft Hv {}.{} build {}: {kind}; privileges {:#010x}",
        info.major, info.minor, info.build, info.privileges_high
    )
}

fn io_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!("{} ({})", errno_name(n), e),
        None => e.to_string(),
    }
}

/// Accumulates rows; the first failure decides the state.
#[derive(Default)]
struct Ladder {
    steps: Vec<Step>,
    decided: Option<(State, usize)>,
}

impl Ladder {
    fn push(&mut self, step: StepName, result: Outcome, detail: String) {
        self.push_cached(step, result, detail, None, false);
    }

    fn push_cached(
        &mut self,
        step: StepName,
        result: Outcome,
        detail: String,
        errno: Option<i32>,
        cached: bool,
    ) {
        self.steps.push(Step {
            step,
            result,
            detail,
            action: None,
            errno,
            cached,
        });
    }

    fn skip(&mut self, step: StepName, why: &str) {
        self.push(step, Outcome::Skip, why.to_string());
    }

    fn fail(&mut self, step: StepName, state: State, detail: String, errno: Option<i32>) {
        self.fail_cached(step, state, detail, errno, false);
    }

    fn fail_cached(
        &mut self,
        step: StepName,
        state: State,
        detail: String,
        errno: Option<i32>,
        cached: bool,
    ) {
        // Only the deciding failure carries advice: later failures usually follow from it
        // (no driver on a non-Hyper-V node), and advising "modprobe" there would mislead.
        let action = self.decided.is_none().then(|| state.action().to_string());
        self.steps.push(Step {
            step,
            result: Outcome::Fail,
            detail,
            action,
            errno,
            cached,
        });
        if self.decided.is_none() {
            self.decided = Some((state, self.steps.len() - 1));
        }
    }

    fn decided_state(&self) -> Option<State> {
        self.decided.map(|(s, _)| s)
    }

    /// (state, reason, action, errno).
    fn verdict(&self) -> (State, String, String, Option<i32>) {
        match self.decided {
            Some((state, idx)) => {
                let step = &self.steps[idx];
                (
                    state,
                    step.detail.clone(),
                    state.action().to_string(),
                    step.errno,
                )
            }
            None => {
                let fp = self
                    .steps
                    .iter()
                    .find(|s| s.step == StepName::Fingerprint && s.result == Outcome::Pass);
                match fp {
                    Some(step) => (
                        State::Capable,
                        step.detail.clone(),
                        State::Capable.action().to_string(),
                        step.errno,
                    ),
                    // Defensive: no failure but no live fingerprint either.
                    None => (
                        State::Error,
                        "the ladder ended without a verdict".into(),
                        State::Error.action().to_string(),
                        None,
                    ),
                }
            }
        }
    }
}
