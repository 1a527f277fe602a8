//! Fake host roots (real files in a temp dir) and a switchable syscall seam for the loop
//! tests and the bench.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use mshv_node_agent::probe::cpuid::{HV_CREATE_PARTITIONS, fake_hyperv_leaf};
use mshv_node_agent::probe::sys::{
    CpuidRegs, Device, FileAccess, HostSys, HvcallOutcome, MshvCreatePartition, NodeInfo, NodeKind,
    Sys,
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
    // libc's geteuid and mknod have no safe wrapper in std.
    #[allow(unsafe_code)]
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
    /// The fake /dev/mshv's mode and owner, changed by chmod/chown.
    pub node: Rc<RefCell<FakeNode>>,
}

/// A device node's mode and owner, and errors to inject into chmod/chown.
#[derive(Debug, Clone)]
pub struct FakeNode {
    pub present: bool,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub ino: u64,
    pub chmod_errno: Option<i32>,
    pub chmod_calls: u32,
    pub chown_calls: u32,
}

impl Default for FakeNode {
    fn default() -> Self {
        Self {
            present: true,
            mode: 0o600,
            uid: 0,
            gid: 0,
            ino: 1,
            chmod_errno: None,
            chmod_calls: 0,
            chown_calls: 0,
        }
    }
}

impl FakeNode {
    /// What udev or a module reload does: a new inode, back to 0600 root:root.
    pub fn recreate(&mut self) {
        self.present = true;
        self.mode = 0o600;
        self.uid = 0;
        self.gid = 0;
        self.ino += 1;
    }
}

impl SwitchSys {
    pub fn l1vh() -> Self {
        Self {
            features: Rc::new(Cell::new(HV_CREATE_PARTITIONS)),
            fingerprint_errno: libc::EINVAL,
            ioctl_calls: Rc::new(Cell::new(0)),
            node: Rc::new(RefCell::new(FakeNode::default())),
        }
    }

    /// Capable (L1VH) or not (an ordinary guest), switched at run time.
    pub fn set_capable(&self, capable: bool) {
        self.features
            .set(if capable { HV_CREATE_PARTITIONS } else { 0 });
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

    fn file_access(&self, path: &Path) -> io::Result<FileAccess> {
        assert!(path.ends_with("dev/mshv"), "only the device node: {path:?}");
        let n = self.node.borrow();
        if !n.present {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(FileAccess {
            kind: NodeKind::CharDevice,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            ino: n.ino,
        })
    }

    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()> {
        assert!(path.ends_with("dev/mshv"), "only the device node: {path:?}");
        let mut n = self.node.borrow_mut();
        n.chmod_calls += 1;
        if let Some(e) = n.chmod_errno {
            return Err(io::Error::from_raw_os_error(e));
        }
        n.mode = mode & 0o7777;
        Ok(())
    }

    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        assert!(path.ends_with("dev/mshv"), "only the device node: {path:?}");
        let mut n = self.node.borrow_mut();
        n.chown_calls += 1;
        if let Some(e) = n.chmod_errno {
            return Err(io::Error::from_raw_os_error(e));
        }
        if let Some(u) = uid {
            n.uid = u;
        }
        if let Some(g) = gid {
            n.gid = g;
        }
        Ok(())
    }
}
