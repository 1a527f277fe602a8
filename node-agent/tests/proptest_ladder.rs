//! The whole probe ladder fuzzed through the syscall seam: arbitrary CPUID registers, arbitrary
//! `/proc/misc` and sysfs text (or read errors), arbitrary `stat` answers, and arbitrary errnos
//! from open and both ioctls. Properties: the probe never panics; `capable` is exactly
//! `state == capable`; capable only when every ladder step that decides passed (a char device
//! opened and the fingerprint answered EINVAL); the exit code matches the state; the report
//! serializes and renders; the labels built from it are valid.
//!
//! Cases: `PROPTEST_CASES` (default 512); `make fuzz` runs more.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use mshv_node_agent::labels::{self, LabelPrefix, is_valid_label_value};
use mshv_node_agent::probe::cpuid::{HV_CPU_MANAGEMENT, HV_CREATE_PARTITIONS, fake_hyperv_leaf};
use mshv_node_agent::probe::sys::{
    CpuidRegs, Device, FileAccess, HvcallOutcome, MshvCreatePartition, NodeInfo, NodeKind, Sys,
};
use mshv_node_agent::probe::{ProbeOptions, Prober, State};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Cpu {
    /// A Hyper-V leaf set with these partition privilege bits (plausible shapes).
    HyperV(u32, u32),
    /// Any registers for every leaf.
    Raw(Vec<CpuidRegs>),
    None,
}

#[derive(Debug, Clone)]
struct FuzzSys {
    cpu: Cpu,
    misc: Result<String, i32>,
    sysfs_dev: Result<String, i32>,
    other_files: Result<String, i32>,
    stat: Result<(u8, u32, u32, u64), i32>,
    open: Result<(), i32>,
    fingerprint: i32,
    self_query: Result<u64, (i32, u16)>,
}

#[derive(Debug)]
struct FuzzDevice {
    fingerprint: i32,
    self_query: Result<u64, (i32, u16)>,
}

impl Device for FuzzDevice {
    fn create_partition(&self, _args: &MshvCreatePartition) -> io::Result<OwnedFd> {
        Err(io::Error::from_raw_os_error(self.fingerprint))
    }

    fn self_partition_property(&self, _code: u32) -> HvcallOutcome {
        match self.self_query {
            Ok(v) => HvcallOutcome {
                result: Ok(v),
                hv_status: 0,
            },
            Err((e, st)) => HvcallOutcome {
                result: Err(io::Error::from_raw_os_error(e)),
                hv_status: st,
            },
        }
    }
}

fn text(r: &Result<String, i32>) -> io::Result<String> {
    r.clone().map_err(io::Error::from_raw_os_error)
}

impl Sys for FuzzSys {
    type Device = FuzzDevice;

    fn cpuid(&self, leaf: u32) -> Option<CpuidRegs> {
        match &self.cpu {
            Cpu::HyperV(ebx, build) => fake_hyperv_leaf(leaf, *ebx, *build),
            Cpu::Raw(regs) if !regs.is_empty() => Some(regs[leaf as usize % regs.len()]),
            Cpu::Raw(_) | Cpu::None => None,
        }
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        if path.ends_with("proc/misc") {
            text(&self.misc)
        } else if path.ends_with("dev") && path.to_string_lossy().contains("class/misc") {
            text(&self.sysfs_dev)
        } else {
            text(&self.other_files)
        }
    }

    fn stat(&self, path: &Path) -> io::Result<NodeInfo> {
        if !path.ends_with("dev/mshv") {
            // The host root and other directories exist.
            return Ok(NodeInfo {
                kind: NodeKind::Directory,
                major: 0,
                minor: 0,
                ino: 2,
            });
        }
        let (kind, major, minor, ino) = self.stat.map_err(io::Error::from_raw_os_error)?;
        let kind = match kind % 5 {
            0 => NodeKind::CharDevice,
            1 => NodeKind::BlockDevice,
            2 => NodeKind::Regular,
            3 => NodeKind::Directory,
            _ => NodeKind::Other,
        };
        Ok(NodeInfo {
            kind,
            major,
            minor,
            ino,
        })
    }

    fn open(&self, _path: &Path) -> io::Result<FuzzDevice> {
        self.open.map_err(io::Error::from_raw_os_error)?;
        Ok(FuzzDevice {
            fingerprint: self.fingerprint,
            self_query: self.self_query,
        })
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

fn errno() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => prop::sample::select(vec![
            libc::EINVAL, libc::ENOENT, libc::EACCES, libc::EPERM, libc::ENOTTY, libc::ENODEV,
            libc::ENXIO, libc::EBUSY, libc::EFAULT, libc::ENOMEM, libc::EIO, libc::EOPNOTSUPP,
        ]),
        1 => any::<i32>(),
    ]
}

fn regs() -> impl Strategy<Value = CpuidRegs> {
    (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>())
        .prop_map(|(eax, ebx, ecx, edx)| CpuidRegs { eax, ebx, ecx, edx })
}

fn cpu() -> impl Strategy<Value = Cpu> {
    prop_oneof![
        3 => (
            prop_oneof![
                Just(HV_CREATE_PARTITIONS),
                Just(HV_CREATE_PARTITIONS | HV_CPU_MANAGEMENT),
                Just(0),
                any::<u32>(),
            ],
            any::<u32>(),
        )
            .prop_map(|(ebx, build)| Cpu::HyperV(ebx, build)),
        1 => prop::collection::vec(regs(), 0..8).prop_map(Cpu::Raw),
        1 => Just(Cpu::None),
    ]
}

fn file_text(plausible: &'static str) -> impl Strategy<Value = Result<String, i32>> {
    prop_oneof![
        6 => Just(Ok(plausible.to_string())),
        1 => "(?s).{0,200}".prop_map(Ok),
        1 => errno().prop_map(Err),
    ]
}

fn fuzz_sys() -> impl Strategy<Value = FuzzSys> {
    (
        cpu(),
        file_text("229 fuse\n 58 mshv\n 57 kvm\n"),
        file_text("10:58\n"),
        file_text("6.6.0-azl3\n"),
        prop_oneof![
            6 => (Just(0u8), Just(10u32), prop_oneof![4 => Just(58u32), 1 => any::<u32>()], any::<u64>())
                .prop_map(Ok),
            1 => (any::<u8>(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(Ok),
            1 => Just(Err(libc::ENOENT)),
            1 => errno().prop_map(Err),
        ],
        prop_oneof![
            6 => Just(Ok(())),
            1 => Just(Err(libc::EACCES)),
            1 => errno().prop_map(Err),
        ],
        prop_oneof![2 => Just(libc::EINVAL), 1 => errno()],
        prop_oneof![
            any::<u64>().prop_map(Ok),
            (errno(), any::<u16>()).prop_map(Err),
        ],
    )
        .prop_map(
            |(cpu, misc, sysfs_dev, other_files, stat, open, fingerprint, self_query)| FuzzSys {
                cpu,
                misc,
                sysfs_dev,
                other_files,
                stat,
                open,
                fingerprint,
                self_query,
            },
        )
}

fn runner() -> proptest::test_runner::TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(512);
    proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

#[test]
fn the_ladder_never_panics_and_is_capable_only_for_a_live_device() {
    let mut runner = runner();
    // How the cases ended, to show the generator reaches every rung of the ladder.
    let states = std::cell::RefCell::new(std::collections::BTreeMap::<&str, u32>::new());
    runner
        .run(&fuzz_sys(), |sys| {
            let s = sys.clone();
            let report = Prober::new(sys, ProbeOptions::default()).probe();
            *states
                .borrow_mut()
                .entry(report.state.as_str())
                .or_default() += 1;
            prop_assert_eq!(report.capable, report.state == State::Capable);
            if report.capable {
                // Capable needs a char device that opened and a fingerprint that said EINVAL.
                prop_assert!(matches!(s.stat, Ok((k, _, _, _)) if k % 5 == 0), "{:?}", s);
                prop_assert!(s.open.is_ok());
                prop_assert_eq!(s.fingerprint, libc::EINVAL);
                prop_assert_eq!(report.errno, Some(libc::EINVAL));
            }
            prop_assert_eq!(report.state.exit_code() == 0, report.capable);
            prop_assert!(!report.reason.is_empty());
            let json =
                serde_json::to_value(&report).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(json["state"].as_str(), Some(report.state.as_str()));
            let prefix = LabelPrefix::default();
            let d = labels::desired(&report, &prefix);
            for v in d.labels.values() {
                prop_assert!(is_valid_label_value(v), "value {:?}", v);
            }
            prop_assert_eq!(
                d.labels.contains_key(&prefix.key("capable")),
                report.capable
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let states = states.into_inner();
    println!(
        "fuzz probe ladder: {} cases passed; states {states:?}",
        runner.config().cases
    );
    // The generator reaches every rung (at the default count, each of these is seen ~20-130
    // times; a small PROPTEST_CASES skips this check).
    let rungs: &[&str] = if runner.config().cases >= 256 {
        &[
            "capable",
            "not-hyperv",
            "not-parent-partition",
            "driver-absent",
            "device-absent",
            "device-stale",
            "permission-denied",
        ]
    } else {
        &[]
    };
    for state in rungs {
        assert!(
            states.contains_key(*state),
            "never reached {state}: {states:?}"
        );
    }
}
