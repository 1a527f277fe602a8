//! The probe ladder against fake host roots (real files in temp dirs, a real mknod'd char
//! device when root) and the errno table through the syscall seam.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use mshv_node_agent::probe::cpuid::{
    HV_CPU_MANAGEMENT, HV_CREATE_PARTITIONS, HV_ISOLATION, fake_hyperv_leaf,
};
use mshv_node_agent::probe::sys::{
    CpuidRegs, Device, FINGERPRINT_ARGS, FileAccess, HV_PARTITION_PROPERTY_PRIVILEGE_FLAGS,
    HostDevice, HostSys, HvcallOutcome, MshvCreatePartition, NodeInfo, NodeKind, Sys,
};
mod common;

use common::fake_sys::FakeRoot;
use mshv_node_agent::probe::{
    Outcome, PartitionType, ProbeOptions, ProbeReport, Prober, State, StepName, Uapi,
};

// ---------- the seam fake ----------

#[derive(Clone, Copy, Debug)]
enum Cpu {
    L1vh,
    Root,
    Guest,
    Isolated,
    Kvm,
    BareMetal,
    NoCpuid,
}

fn cpu_leaf(cpu: Cpu, leaf: u32) -> Option<CpuidRegs> {
    let hv = |ebx| fake_hyperv_leaf(leaf, ebx, 26102);
    match cpu {
        Cpu::L1vh => hv(HV_CREATE_PARTITIONS),
        Cpu::Root => hv(HV_CREATE_PARTITIONS | HV_CPU_MANAGEMENT),
        Cpu::Guest => hv(0),
        Cpu::Isolated => hv(HV_CREATE_PARTITIONS | HV_CPU_MANAGEMENT | HV_ISOLATION),
        Cpu::Kvm => Some(match leaf {
            1 => CpuidRegs {
                ecx: 1 << 31,
                ..Default::default()
            },
            0x4000_0000 => CpuidRegs {
                eax: 0x4000_0001,
                ebx: u32::from_le_bytes(*b"KVMK"),
                ecx: u32::from_le_bytes(*b"VMKV"),
                edx: u32::from_le_bytes(*b"M\0\0\0"),
            },
            _ => CpuidRegs::default(),
        }),
        Cpu::BareMetal => Some(CpuidRegs::default()),
        Cpu::NoCpuid => None,
    }
}

#[derive(Clone, Copy, Debug)]
enum Open {
    /// Real open(2) of the file in the fake root.
    Real,
    /// Pretend the open worked; ioctls come from the script below.
    Fake,
    Errno(i32),
    /// Really open /dev/null instead (real fd, real ioctls).
    DevNull,
}

#[derive(Clone, Copy, Debug)]
enum Fp {
    Errno(i32),
    /// The ioctl "creates a partition" and returns an fd (the write end of a pipe).
    Create,
}

struct TestSys {
    cpu: Cpu,
    /// Override of stat(<root>/dev/mshv); None = real stat.
    stat_dev: Option<Result<NodeInfo, i32>>,
    open: Open,
    fingerprint: Fp,
    self_query: Result<u64, (i32, u16)>,
    ioctl_calls: Rc<Cell<u32>>,
    partition_fd: Rc<RefCell<Option<OwnedFd>>>,
}

impl TestSys {
    fn new(cpu: Cpu) -> Self {
        Self {
            cpu,
            stat_dev: None,
            open: Open::Fake,
            fingerprint: Fp::Errno(libc::EINVAL),
            self_query: Err((libc::ENOTTY, 0)),
            ioctl_calls: Rc::new(Cell::new(0)),
            partition_fd: Rc::new(RefCell::new(None)),
        }
    }

    /// Pretend <root>/dev/mshv is char 10:`minor` (no mknod needed).
    fn char_dev(mut self, minor: u32) -> Self {
        self.stat_dev = Some(Ok(NodeInfo {
            kind: NodeKind::CharDevice,
            major: 10,
            minor,
            ino: 4242,
        }));
        self
    }
}

enum TestDevice {
    Real(HostDevice),
    Fake {
        fingerprint: Fp,
        self_query: Result<u64, (i32, u16)>,
        calls: Rc<Cell<u32>>,
        partition_fd: Rc<RefCell<Option<OwnedFd>>>,
    },
}

impl Device for TestDevice {
    fn create_partition(&self, args: &MshvCreatePartition) -> io::Result<OwnedFd> {
        match self {
            TestDevice::Real(d) => d.create_partition(args),
            TestDevice::Fake {
                fingerprint,
                calls,
                partition_fd,
                ..
            } => {
                assert_eq!(
                    *args, FINGERPRINT_ARGS,
                    "the probe must only send the fingerprint"
                );
                calls.set(calls.get() + 1);
                match fingerprint {
                    Fp::Errno(e) => Err(io::Error::from_raw_os_error(*e)),
                    Fp::Create => partition_fd
                        .borrow_mut()
                        .take()
                        .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF)),
                }
            }
        }
    }

    fn self_partition_property(&self, code: u32) -> HvcallOutcome {
        match self {
            TestDevice::Real(d) => d.self_partition_property(code),
            TestDevice::Fake {
                self_query, calls, ..
            } => {
                assert_eq!(code, HV_PARTITION_PROPERTY_PRIVILEGE_FLAGS);
                calls.set(calls.get() + 1);
                match self_query {
                    Ok(v) => HvcallOutcome {
                        result: Ok(*v),
                        hv_status: 0,
                    },
                    Err((e, st)) => HvcallOutcome {
                        result: Err(io::Error::from_raw_os_error(*e)),
                        hv_status: *st,
                    },
                }
            }
        }
    }
}

impl Sys for TestSys {
    type Device = TestDevice;

    fn cpuid(&self, leaf: u32) -> Option<CpuidRegs> {
        cpu_leaf(self.cpu, leaf)
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        HostSys.read_to_string(path)
    }

    fn stat(&self, path: &Path) -> io::Result<NodeInfo> {
        match (&self.stat_dev, path.ends_with("dev/mshv")) {
            (Some(Ok(info)), true) => Ok(*info),
            (Some(Err(e)), true) => Err(io::Error::from_raw_os_error(*e)),
            _ => HostSys.stat(path),
        }
    }

    fn open(&self, path: &Path) -> io::Result<TestDevice> {
        match self.open {
            Open::Real => HostSys.open(path).map(TestDevice::Real),
            Open::DevNull => HostSys.open(Path::new("/dev/null")).map(TestDevice::Real),
            Open::Errno(e) => Err(io::Error::from_raw_os_error(e)),
            Open::Fake => Ok(TestDevice::Fake {
                fingerprint: self.fingerprint,
                self_query: self.self_query,
                calls: Rc::clone(&self.ioctl_calls),
                partition_fd: Rc::clone(&self.partition_fd),
            }),
        }
    }

    // The probe ladder never changes files: these must not be reached from it.
    fn file_access(&self, _path: &Path) -> io::Result<FileAccess> {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }

    fn chmod(&self, _path: &Path, _mode: u32) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }

    fn chown(&self, _path: &Path, _uid: Option<u32>, _gid: Option<u32>) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }
}

fn probe(sys: TestSys, root: &FakeRoot) -> ProbeReport {
    Prober::new(sys, opts(root)).probe()
}

fn opts(root: &FakeRoot) -> ProbeOptions {
    ProbeOptions {
        host_root: root.path().to_path_buf(),
        self_query: true,
        fingerprint_max_age: Duration::ZERO,
    }
}

fn step(report: &ProbeReport, name: StepName) -> &mshv_node_agent::probe::Step {
    report
        .steps
        .iter()
        .find(|s| s.step == name)
        .unwrap_or_else(|| panic!("no step {name:?} in {report:#?}"))
}

// ---------- tests ----------

#[test]
fn capable_l1vh_with_every_step_passing() {
    let root = FakeRoot::new().with_driver(58);
    let r = probe(TestSys::new(Cpu::L1vh).char_dev(58), &root);
    assert_eq!(r.state, State::Capable, "{r:#?}");
    assert!(r.capable);
    assert_eq!(r.partition_type, PartitionType::L1vh);
    assert_eq!(r.hv_build, Some(26102));
    assert_eq!(r.hv_version.as_deref(), Some("10.0.26102"));
    assert_eq!(r.uapi, Some(Uapi::Mainline));
    assert_eq!(r.errno, Some(libc::EINVAL));
    assert_eq!(r.errno_name.as_deref(), Some("EINVAL"));
    assert_eq!(r.kernel_release.as_deref(), Some("6.18.0-test"));
    assert_eq!(r.device.map(|d| (d.major, d.minor)), Some((10, 58)));
    for s in [
        StepName::Cpuid,
        StepName::ProcMisc,
        StepName::Sysfs,
        StepName::Device,
        StepName::Open,
        StepName::Fingerprint,
    ] {
        assert_eq!(step(&r, s).result, Outcome::Pass, "{s:?}: {r:#?}");
    }
    // ENOTTY from the self query is normal and leaves the node capable.
    assert_eq!(step(&r, StepName::SelfQuery).result, Outcome::Info);
    assert_eq!(r.state.exit_code(), 0);
}

#[test]
fn root_partition_with_self_query_reports_hvcall_uapi() {
    let root = FakeRoot::new().with_driver(58);
    let mut sys = TestSys::new(Cpu::Root).char_dev(58);
    sys.self_query = Ok(0x0000_2BFF_0000_3FFF);
    let r = probe(sys, &root);
    assert_eq!(r.state, State::Capable);
    assert_eq!(r.partition_type, PartitionType::Root);
    assert_eq!(r.uapi, Some(Uapi::MainlineHvcall));
    assert_eq!(r.self_privileges.as_deref(), Some("0x00002bff00003fff"));
}

#[test]
fn self_query_errors_never_make_a_node_incapable() {
    for (errno, status) in [
        (libc::EINVAL, 0u16),
        (libc::EIO, 0x0006),
        (libc::EACCES, 0x0006),
    ] {
        let root = FakeRoot::new().with_driver(58);
        let mut sys = TestSys::new(Cpu::L1vh).char_dev(58);
        sys.self_query = Err((errno, status));
        let r = probe(sys, &root);
        assert_eq!(r.state, State::Capable, "errno {errno}");
        assert_eq!(r.uapi, Some(Uapi::Mainline));
        assert_eq!(step(&r, StepName::SelfQuery).result, Outcome::Warn);
    }
}

#[test]
fn self_query_can_be_disabled() {
    let root = FakeRoot::new().with_driver(58);
    let sys = TestSys::new(Cpu::L1vh).char_dev(58);
    let calls = Rc::clone(&sys.ioctl_calls);
    let mut o = opts(&root);
    o.self_query = false;
    let r = Prober::new(sys, o).probe();
    assert_eq!(r.state, State::Capable);
    assert_eq!(calls.get(), 1, "only the fingerprint ioctl");
    assert_eq!(step(&r, StepName::SelfQuery).result, Outcome::Skip);
}

#[test]
fn cpuid_verdicts_come_first_and_skip_the_ioctls() {
    let cases = [
        (Cpu::Kvm, State::NotHyperv, PartitionType::None),
        (Cpu::BareMetal, State::NotHyperv, PartitionType::None),
        (Cpu::Guest, State::NotParentPartition, PartitionType::Guest),
        (
            Cpu::Isolated,
            State::NotParentPartition,
            PartitionType::Guest,
        ),
    ];
    for (cpu, state, pt) in cases {
        // Even with a driver and a device present, CPUID decides and nothing is opened.
        let root = FakeRoot::new().with_driver(58);
        let sys = TestSys::new(cpu).char_dev(58);
        let calls = Rc::clone(&sys.ioctl_calls);
        let r = probe(sys, &root);
        assert_eq!((r.state, r.partition_type), (state, pt), "{cpu:?}: {r:#?}");
        assert_eq!(calls.get(), 0, "{cpu:?}: no ioctl after a CPUID verdict");
        assert_eq!(step(&r, StepName::Open).result, Outcome::Skip);
        assert_eq!(r.state.exit_code(), 1);
        assert!(!r.reason.is_empty());
    }
    let r = probe(TestSys::new(Cpu::Kvm), &FakeRoot::new().without_driver());
    assert!(r.reason.contains("KVMKVMKVM"), "{}", r.reason);
    assert_eq!(r.hv_vendor.as_deref(), Some("KVMKVMKVM"));
}

#[test]
fn only_the_deciding_failure_carries_advice() {
    let r = probe(TestSys::new(Cpu::Kvm), &FakeRoot::new().without_driver());
    assert_eq!(r.state, State::NotHyperv);
    assert!(step(&r, StepName::Cpuid).action.is_some());
    let misc = step(&r, StepName::ProcMisc);
    assert_eq!(misc.result, Outcome::Fail);
    assert!(misc.action.is_none(), "no modprobe advice on a KVM node");
}

#[test]
fn no_cpuid_relies_on_the_device() {
    let root = FakeRoot::new().with_driver(58);
    let r = probe(TestSys::new(Cpu::NoCpuid).char_dev(58), &root);
    assert_eq!(r.state, State::Capable);
    assert_eq!(r.partition_type, PartitionType::Unknown);
    assert_eq!(step(&r, StepName::Cpuid).result, Outcome::Skip);
}

#[test]
fn driver_absent_names_the_module() {
    let root = FakeRoot::new().without_driver();
    let r = probe(TestSys::new(Cpu::L1vh), &root);
    assert_eq!(r.state, State::DriverAbsent);
    assert!(r.reason.contains("not loaded"), "{}", r.reason);
    fs::create_dir_all(root.path().join("sys/module/mshv_root")).expect("mkdir");
    let r = probe(TestSys::new(Cpu::L1vh), &root);
    assert_eq!(r.state, State::DriverAbsent);
    assert!(r.reason.contains("is loaded"), "{}", r.reason);
}

#[test]
fn missing_device_node_is_device_absent() {
    let root = FakeRoot::new().with_driver(58);
    let r = probe(TestSys::new(Cpu::L1vh), &root);
    assert_eq!(r.state, State::DeviceAbsent);
    assert_eq!(r.errno, Some(libc::ENOENT));
    assert!(r.reason.contains("10:58"), "{}", r.reason);
}

#[test]
fn regular_file_instead_of_device_is_stale() {
    let root = FakeRoot::new().with_driver(58);
    root.write("dev/mshv", "not a device");
    let r = probe(TestSys::new(Cpu::L1vh), &root);
    assert_eq!(r.state, State::DeviceStale);
    assert!(r.reason.contains("regular file"), "{}", r.reason);
}

#[test]
fn real_char_device_with_wrong_numbers_is_stale() {
    let root = FakeRoot::new().with_driver(58);
    if root.mknod_char(10, 59).is_none() {
        return;
    }
    let r = probe(TestSys::new(Cpu::L1vh), &root);
    assert_eq!(r.state, State::DeviceStale, "{r:#?}");
    assert!(
        r.reason.contains("10:59") && r.reason.contains("10:58"),
        "{}",
        r.reason
    );
}

#[test]
fn real_char_device_without_a_driver_behind_it_fails_to_open() {
    // A real node whose numbers match the (fake) driver, but no misc driver is registered at
    // that minor on this machine: the kernel's open(2) answers ENODEV.
    let registered: HashSet<u32> = fs::read_to_string("/proc/misc")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let Some(minor) = (100..250).rev().find(|m| !registered.contains(m)) else {
        eprintln!("NOTE: no free misc minor found, skipping");
        return;
    };
    let root = FakeRoot::new().with_driver(minor);
    if root.mknod_char(10, minor).is_none() {
        return;
    }
    let mut sys = TestSys::new(Cpu::L1vh);
    sys.open = Open::Real;
    let r = probe(sys, &root);
    assert_eq!(r.state, State::DeviceStale, "{r:#?}");
    assert_eq!(step(&r, StepName::Device).result, Outcome::Pass);
    assert!(
        matches!(r.errno, Some(libc::ENODEV) | Some(libc::ENXIO)),
        "{:?}",
        r.errno
    );
}

#[test]
fn real_ioctls_on_a_device_that_is_not_mshv_give_unknown_abi() {
    // The ladder's own checks keep it from opening a node whose numbers do not match the
    // driver, so to drive the *real* ioctl path through the ladder the seam opens /dev/null
    // in place of the (fake) 10:58 node: MSHV_CREATE_PARTITION then really runs and the
    // kernel answers ENOTTY.
    let root = FakeRoot::new().with_driver(58);
    let mut sys = TestSys::new(Cpu::L1vh).char_dev(58);
    sys.open = Open::DevNull;
    let r = probe(sys, &root);
    assert_eq!(r.state, State::UnknownAbi, "{r:#?}");
    assert_eq!(r.errno, Some(libc::ENOTTY));
    assert_eq!(r.uapi, Some(Uapi::Unknown));
}

#[test]
fn stat_and_open_errno_table() {
    let stat_cases = [
        (libc::ENOENT, State::DeviceAbsent),
        (libc::EACCES, State::PermissionDenied),
        (libc::EIO, State::Error),
    ];
    for (errno, state) in stat_cases {
        let root = FakeRoot::new().with_driver(58);
        let mut sys = TestSys::new(Cpu::L1vh);
        sys.stat_dev = Some(Err(errno));
        let r = probe(sys, &root);
        assert_eq!(r.state, state, "stat errno {errno}");
        assert_eq!(r.errno, Some(errno));
    }
    let open_cases = [
        (libc::EACCES, State::PermissionDenied, "file mode"),
        (libc::EPERM, State::PermissionDenied, "cgroup"),
        (libc::ENODEV, State::DeviceStale, "no driver"),
        (libc::ENXIO, State::DeviceStale, "no driver"),
        (libc::ENOENT, State::DeviceAbsent, "vanished"),
        (libc::EIO, State::Error, "EIO"),
    ];
    for (errno, state, needle) in open_cases {
        let root = FakeRoot::new().with_driver(58);
        let mut sys = TestSys::new(Cpu::L1vh).char_dev(58);
        sys.open = Open::Errno(errno);
        let calls = Rc::clone(&sys.ioctl_calls);
        let r = probe(sys, &root);
        assert_eq!(r.state, state, "open errno {errno}");
        assert_eq!(r.errno, Some(errno));
        assert!(
            r.reason.contains(needle),
            "open errno {errno}: {}",
            r.reason
        );
        assert_eq!(calls.get(), 0);
        assert_eq!(step(&r, StepName::Fingerprint).result, Outcome::Skip);
    }
}

#[test]
fn fingerprint_errno_table() {
    let cases = [
        (libc::EINVAL, State::Capable, Some(Uapi::Mainline)),
        (libc::ENOTTY, State::UnknownAbi, Some(Uapi::Unknown)),
        (libc::EPERM, State::PermissionDenied, None),
        (libc::EACCES, State::PermissionDenied, None),
        (libc::ENODEV, State::DeviceStale, None),
        (libc::ENXIO, State::DeviceStale, None),
        (libc::EIO, State::Error, None),
        (libc::EFAULT, State::Error, None),
        (libc::ENOMEM, State::Error, None),
    ];
    for (errno, state, uapi) in cases {
        let root = FakeRoot::new().with_driver(58);
        let mut sys = TestSys::new(Cpu::L1vh).char_dev(58);
        sys.fingerprint = Fp::Errno(errno);
        let r = probe(sys, &root);
        assert_eq!(r.state, state, "ioctl errno {errno}: {r:#?}");
        assert_eq!(r.errno, Some(errno));
        assert_eq!(r.uapi, uapi, "ioctl errno {errno}");
        assert_eq!(
            r.state.exit_code(),
            match state {
                State::Capable => 0,
                State::Error => 2,
                _ => 1,
            }
        );
    }
}

#[test]
fn a_created_partition_is_closed_at_once_and_reported() {
    let root = FakeRoot::new().with_driver(58);
    let sys = TestSys::new(Cpu::L1vh).char_dev(58);
    let (mut read_end, write_end) = std::io::pipe().expect("pipe");
    *sys.partition_fd.borrow_mut() = Some(OwnedFd::from(write_end));
    let mut sys = sys;
    sys.fingerprint = Fp::Create;
    let r = probe(sys, &root);
    assert_eq!(r.state, State::UnknownAbi);
    assert!(r.partition_created_and_closed);
    assert!(r.reason.contains("SUCCEEDED"), "{}", r.reason);
    // EOF on the read end proves the probe closed the only write end (the "partition fd").
    let mut buf = [0u8; 1];
    assert_eq!(read_end.read(&mut buf).expect("read"), 0);
}

#[test]
fn proc_misc_unreadable_is_an_error_and_sysfs_mismatch_too() {
    let root = FakeRoot::new();
    let r = probe(TestSys::new(Cpu::L1vh), &root);
    assert_eq!(r.state, State::Error);
    assert_eq!(r.errno, Some(libc::ENOENT));
    assert!(r.reason.contains("/proc/misc"), "{}", r.reason);

    let root = FakeRoot::new().with_driver(58);
    root.write("sys/class/misc/mshv/dev", "10:77\n");
    let r = probe(TestSys::new(Cpu::L1vh).char_dev(58), &root);
    assert_eq!(r.state, State::Error);
    assert!(r.reason.contains("disagree"), "{}", r.reason);
}

#[test]
fn missing_sysfs_is_only_a_warning() {
    let root = FakeRoot::new().with_driver(58);
    fs::remove_dir_all(root.path().join("sys/class/misc/mshv")).expect("rm");
    let r = probe(TestSys::new(Cpu::L1vh).char_dev(58), &root);
    assert_eq!(r.state, State::Capable);
    assert_eq!(step(&r, StepName::Sysfs).result, Outcome::Warn);
}

#[test]
fn host_root_must_be_a_directory() {
    let root = FakeRoot::new();
    let file = root.path().join("file");
    fs::write(&file, "x").expect("write");
    for bad in [file, root.path().join("missing")] {
        let o = ProbeOptions {
            host_root: bad,
            ..ProbeOptions::default()
        };
        let r = Prober::new(TestSys::new(Cpu::L1vh), o).probe();
        assert_eq!(r.state, State::Error);
        assert_eq!(r.steps.len(), 1);
        assert_eq!(r.state.exit_code(), 2);
    }
}

#[test]
fn fingerprint_is_memoised_per_device_node() {
    let root = FakeRoot::new().with_driver(58);
    let sys = TestSys::new(Cpu::L1vh).char_dev(58);
    let calls = Rc::clone(&sys.ioctl_calls);
    let mut o = opts(&root);
    o.fingerprint_max_age = Duration::from_secs(3600);
    let mut prober = Prober::new(sys, o);
    let first = prober.probe();
    assert_eq!(calls.get(), 2, "fingerprint + self query");
    let second = prober.probe();
    assert_eq!(calls.get(), 2, "reused");
    assert_eq!(second.state, State::Capable);
    assert!(step(&second, StepName::Fingerprint).cached);
    assert!(!step(&first, StepName::Fingerprint).cached);

    // Zero max age: every probe asks the device again.
    let sys = TestSys::new(Cpu::L1vh).char_dev(58);
    let calls = Rc::clone(&sys.ioctl_calls);
    let mut prober = Prober::new(sys, opts(&root));
    prober.probe();
    prober.probe();
    assert_eq!(calls.get(), 4);
}

/// What this machine's own files say about mshv, read without the agent's code: the probe on
/// the real host is checked against these, so the test holds on a CI VM (no /dev/mshv) and on
/// the Hyper-V root or L1VH nodes this project is for alike.
struct HostFacts {
    /// `/proc/misc` lists a misc device named `mshv` (the mshv_root driver registered).
    misc_has_mshv: bool,
    /// `/dev/mshv` exists and is a character device.
    dev_is_char: bool,
    /// x86_64 only: `/proc/cpuinfo` has the `hypervisor` flag (CPUID.1:ECX[31], the bit the
    /// probe's "bare metal" verdict reads). `None` where unknown.
    hypervisor_flag: Option<bool>,
}

impl HostFacts {
    fn read() -> Self {
        use std::os::unix::fs::FileTypeExt;
        let misc = fs::read_to_string("/proc/misc").expect("/proc/misc is readable on Linux");
        let misc_has_mshv = misc
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("mshv"));
        let dev_is_char = fs::metadata("/dev/mshv").is_ok_and(|m| m.file_type().is_char_device());
        let hypervisor_flag = if cfg!(target_arch = "x86_64") {
            fs::read_to_string("/proc/cpuinfo").ok().map(|t| {
                t.lines()
                    .filter(|l| l.starts_with("flags"))
                    .any(|l| l.split_whitespace().any(|f| f == "hypervisor"))
            })
        } else {
            None
        };
        Self {
            misc_has_mshv,
            dev_is_char,
            hypervisor_flag,
        }
    }
}

#[test]
fn the_real_host_probe_agrees_with_what_the_host_has() {
    let host = HostFacts::read();
    let r = Prober::new(HostSys, ProbeOptions::default()).probe();

    // With a readable / and /proc the ladder always reaches a verdict of its own.
    assert_ne!(r.state, State::Error, "{r:#?}");
    assert_eq!(r.capable, r.state == State::Capable, "{r:#?}");
    assert!(!r.reason.is_empty(), "{r:#?}");

    if host.hypervisor_flag == Some(false) {
        assert_eq!(r.state, State::NotHyperv, "no hypervisor CPUID bit: {r:#?}");
    }
    if !host.misc_has_mshv {
        // No driver: the ladder stops at CPUID (not Hyper-V, or a guest) or at /proc/misc.
        assert!(
            matches!(
                r.state,
                State::NotHyperv | State::NotParentPartition | State::DriverAbsent
            ),
            "no mshv in /proc/misc: {r:#?}"
        );
    } else if !host.dev_is_char {
        assert!(
            matches!(
                r.state,
                State::NotHyperv
                    | State::NotParentPartition
                    | State::DeviceAbsent
                    | State::DeviceStale
            ),
            "mshv registered but no /dev/mshv character device: {r:#?}"
        );
    }
    if r.capable {
        assert!(host.misc_has_mshv && host.dev_is_char, "{r:#?}");
        assert!(
            matches!(r.uapi, Some(Uapi::Mainline | Uapi::MainlineHvcall)),
            "{r:#?}"
        );
        assert!(
            cfg!(not(target_arch = "x86_64")) || r.partition_type.is_parent(),
            "{r:#?}"
        );
    }
}
