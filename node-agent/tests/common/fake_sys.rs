//! Fake host roots (real files in a temp dir) and a switchable syscall seam for the loop
//! tests and the bench.
#![allow(dead_code)]

use std::cell::Cell;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use mshv_node_agent::probe::cpuid::{HV_CREATE_PARTITIONS, fake_hyperv_leaf};
use mshv_node_agent::probe::sys::{
    CpuidRegs, Device, HostSys, HvcallOutcome, MshvCreatePartition, NodeInfo, NodeKind, Sys,
};

/// A host root in a temp dir: `proc/`, `sys/`, `dev/` as the probe expects them.
pub struct FakeRoot {
    dir: tempfile::TempDir,
}

impl Default for FakeRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeRoot {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["proc/sys/kernel", "sys/class/misc", "sys/module", "dev"] {
            fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        fs::write(
            dir.path().join("proc/sys/kernel/osrelease"),
            "6.18.0-test\n",
        )
        .expect("osrelease");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
    }

    /// A driver registered at 10:`minor`: /proc/misc and sysfs agree.
    pub fn with_driver(self, minor: u32) -> Self {
        self.write(
            "proc/misc",
            &format!("234 btrfs-control\n{minor:>3} mshv\n232 kvm\n"),
        );
        self.write("sys/class/misc/mshv/dev", &format!("10:{minor}\n"));
        fs::create_dir_all(self.path().join("sys/module/mshv_root")).expect("module dir");
        self
    }

    pub fn without_driver(self) -> Self {
        self.write("proc/misc", "234 btrfs-control\n232 kvm\n");
        self
    }

    /// mknod a real character device at dev/mshv; None (with a printed note) when not root.
    pub fn mknod_char(&self, major: u32, minor: u32) -> Option<()> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("NOTE: not root, skipping the mknod part of this test");
            return None;
        }
        let path = self.path().join("dev/mshv");
        let c = CString::new(path.as_os_str().as_bytes()).expect("cstring");
        // SAFETY: valid NUL-terminated path; mknod does not retain it.
        let rc = unsafe {
            libc::mknod(
                c.as_ptr(),
                libc::S_IFCHR | 0o600,
                libc::makedev(major, minor),
            )
        };
        assert_eq!(rc, 0, "mknod: {}", io::Error::last_os_error());
        Some(())
    }
}

/// Real file reads and stats under a fake root, but CPUID, the /dev/mshv node and its
/// ioctls are faked: `features` switches the partition type at run time (0 = guest,
/// HV_CREATE_PARTITIONS = L1VH).
#[derive(Clone)]
pub struct SwitchSys {
    pub features: Rc<Cell<u32>>,
    pub fingerprint_errno: i32,
    pub ioctl_calls: Rc<Cell<u64>>,
}

impl SwitchSys {
    pub fn l1vh() -> Self {
        Self {
            features: Rc::new(Cell::new(HV_CREATE_PARTITIONS)),
            fingerprint_errno: libc::EINVAL,
            ioctl_calls: Rc::new(Cell::new(0)),
        }
    }
}

pub struct SwitchDevice {
    errno: i32,
    calls: Rc<Cell<u64>>,
}

impl Device for SwitchDevice {
    fn create_partition(&self, _args: &MshvCreatePartition) -> io::Result<OwnedFd> {
        self.calls.set(self.calls.get() + 1);
        Err(io::Error::from_raw_os_error(self.errno))
    }

    fn self_partition_property(&self, _code: u32) -> HvcallOutcome {
        self.calls.set(self.calls.get() + 1);
        HvcallOutcome {
            result: Err(io::Error::from_raw_os_error(libc::ENOTTY)),
            hv_status: 0,
        }
    }
}

impl Sys for SwitchSys {
    type Device = SwitchDevice;

    fn cpuid(&self, leaf: u32) -> Option<CpuidRegs> {
        fake_hyperv_leaf(leaf, self.features.get(), 26102)
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        HostSys.read_to_string(path)
    }

    fn stat(&self, path: &Path) -> io::Result<NodeInfo> {
        if path.ends_with("dev/mshv") {
            return Ok(NodeInfo {
                kind: NodeKind::CharDevice,
                major: 10,
                minor: 58,
                ino: 1,
            });
        }
        HostSys.stat(path)
    }

    fn open(&self, _path: &Path) -> io::Result<SwitchDevice> {
        Ok(SwitchDevice {
            errno: self.fingerprint_errno,
            calls: Rc::clone(&self.ioctl_calls),
        })
    }
}
