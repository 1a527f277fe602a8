//! The syscall seam: everything the probe asks of the kernel goes through [`Sys`] and
//! [`Device`], so every errno path of the ladder can be unit tested with a fake, and the
//! real implementation ([`HostSys`]) stays a thin, obviously-correct wrapper over libc.
//!
//! ABI facts are taken from Linux `include/uapi/linux/mshv.h` (torvalds/linux) and
//! `drivers/hv/mshv_root_main.c` (`mshv_ioctl_create_partition`, `mshv_dev_ioctl`,
//! `mshv_ioctl_passthru_hvcall`), cross-checked against rust-vmm/mshv
//! `mshv-ioctls/src/ioctls/system.rs` (`get_host_partition_property`).

// The one module of the agent that needs unsafe (the workspace denies it elsewhere): ioctl(2),
// adopting the fd MSHV_CREATE_PARTITION returns, and CPUID. Each block has a SAFETY comment.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// `MSHV_IOCTL` in include/uapi/linux/mshv.h.
pub const MSHV_IOCTL_TYPE: u32 = 0xB8;

// asm-generic/ioctl.h encoding (x86_64 and arm64 both use the generic layout):
// dir << 30 | size << 16 | type << 8 | nr.
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (ty << 8) | nr
}

/// `struct mshv_create_partition` (include/uapi/linux/mshv.h): `{ __u64 pt_flags; __u64 pt_isolation; }`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MshvCreatePartition {
    pub pt_flags: u64,
    pub pt_isolation: u64,
}

/// `struct mshv_root_hvcall` (include/uapi/linux/mshv.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MshvRootHvcall {
    pub code: u16,
    pub reps: u16,
    pub in_sz: u16,
    pub out_sz: u16,
    pub status: u16,
    pub rsvd: [u8; 6],
    pub in_ptr: u64,
    pub out_ptr: u64,
}

/// `MSHV_CREATE_PARTITION = _IOW(MSHV_IOCTL, 0x00, struct mshv_create_partition)` = 0x4010B800.
pub const MSHV_CREATE_PARTITION: u32 = ioc(
    IOC_WRITE,
    MSHV_IOCTL_TYPE,
    0x00,
    std::mem::size_of::<MshvCreatePartition>(),
);

/// `MSHV_ROOT_HVCALL = _IOWR(MSHV_IOCTL, 0x07, struct mshv_root_hvcall)` = 0xC020B807.
pub const MSHV_ROOT_HVCALL: u32 = ioc(
    IOC_READ | IOC_WRITE,
    MSHV_IOCTL_TYPE,
    0x07,
    std::mem::size_of::<MshvRootHvcall>(),
);

/// The fingerprint argument: `pt_isolation` far past `MSHV_PT_ISOLATION_COUNT`, so the
/// mainline driver answers EINVAL from its argument check, before `hv_call_create_partition`
/// (see `mshv_ioctl_create_partition`). It never reaches the hypervisor on that ABI.
pub const FINGERPRINT_ARGS: MshvCreatePartition = MshvCreatePartition {
    pt_flags: 0,
    pt_isolation: u64::MAX,
};

/// `HVCALL_GET_PARTITION_PROPERTY` (include/hyperv/hvgdk_mini.h): read-only, on the
/// kernel's pass-through allow list (`mshv_passthru_hvcalls`).
pub const HVCALL_GET_PARTITION_PROPERTY: u16 = 0x0044;
/// `HV_PARTITION_PROPERTY_PRIVILEGE_FLAGS` (include/hyperv/hvhdk_mini.h).
pub const HV_PARTITION_PROPERTY_PRIVILEGE_FLAGS: u32 = 0x0001_0000;
/// `HV_PARTITION_ID_SELF`: newer kernels overwrite the id anyway ("kernel will populate
/// partition_id"), older ones never accept this ioctl on /dev/mshv (ENOTTY).
pub const HV_PARTITION_ID_SELF: u64 = u64::MAX;

/// `struct hv_input_get_partition_property` (include/hyperv/hvhdk.h, `__packed`, 16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct HvInputGetPartitionProperty {
    partition_id: u64,
    property_code: u32,
    padding: u32,
}

/// Raw CPUID registers of one leaf.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuidRegs {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// What `stat` says about a path, reduced to what the probe needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    CharDevice,
    BlockDevice,
    Regular,
    Directory,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo {
    pub kind: NodeKind,
    /// Device numbers from `st_rdev` (0:0 for non-devices).
    pub major: u32,
    pub minor: u32,
    /// Inode number: with the numbers it identifies "the same node" between probes.
    pub ino: u64,
}

/// Permission bits and owner of a path (`stat(2)`), for the device access step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileAccess {
    pub kind: NodeKind,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Inode number: a changed inode means the node was re-created.
    pub ino: u64,
}

/// Result of the optional self partition-property query: the errno, if any, plus the
/// hypervisor status the kernel copied back (0 when the call never reached the hypervisor).
#[derive(Debug)]
pub struct HvcallOutcome {
    pub result: io::Result<u64>,
    pub hv_status: u16,
}

/// An open `/dev/mshv`. Dropping it closes the fd.
pub trait Device {
    /// `MSHV_CREATE_PARTITION`. `Ok(fd)` means a partition was created: the caller must drop
    /// (close) it at once, which tears the partition down.
    fn create_partition(&self, args: &MshvCreatePartition) -> io::Result<OwnedFd>;
    /// `MSHV_ROOT_HVCALL` / `HVCALL_GET_PARTITION_PROPERTY` on the device fd (self partition).
    fn self_partition_property(&self, code: u32) -> HvcallOutcome;
}

/// The host as the probe sees it. Paths are absolute (already prefixed with the host root).
pub trait Sys {
    type Device: Device;
    /// `None` where CPUID does not exist (non-x86_64).
    fn cpuid(&self, leaf: u32) -> Option<CpuidRegs>;
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// `stat(2)` (follows symlinks, as `open` would).
    fn stat(&self, path: &Path) -> io::Result<NodeInfo>;
    /// Open read-only, close-on-exec, non-blocking: ioctls on a misc device need no write
    /// access, and this is what rust-vmm's `Mshv::open_with_cloexec` does too.
    fn open(&self, path: &Path) -> io::Result<Self::Device>;
    /// `stat(2)` with mode and owner (follows symlinks).
    fn file_access(&self, path: &Path) -> io::Result<FileAccess>;
    /// `chmod(2)`: set the permission bits (`mode & 0o7777`).
    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// `chown(2)`; `None` leaves that id unchanged (-1).
    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()>;
}

/// The real host.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostSys;

/// `/dev/mshv` opened on the real host.
#[derive(Debug)]
pub struct HostDevice {
    file: File,
}

impl Device for HostDevice {
    fn create_partition(&self, args: &MshvCreatePartition) -> io::Result<OwnedFd> {
        let arg: *const MshvCreatePartition = args;
        // SAFETY: the fd is open for the lifetime of `self.file`; the request number and
        // argument struct match `_IOW(0xB8, 0x00, struct mshv_create_partition)`, and the
        // kernel only reads `size_of::<MshvCreatePartition>()` bytes from `arg`.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                MSHV_CREATE_PARTITION as libc::Ioctl,
                arg,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: on success the ioctl returns a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(ret) })
    }

    fn self_partition_property(&self, code: u32) -> HvcallOutcome {
        let input = HvInputGetPartitionProperty {
            partition_id: HV_PARTITION_ID_SELF,
            property_code: code,
            padding: 0,
        };
        let mut output: u64 = 0;
        let mut args = MshvRootHvcall {
            code: HVCALL_GET_PARTITION_PROPERTY,
            in_sz: std::mem::size_of::<HvInputGetPartitionProperty>() as u16,
            out_sz: std::mem::size_of::<u64>() as u16,
            in_ptr: std::ptr::from_ref(&input) as u64,
            out_ptr: std::ptr::from_mut(&mut output) as u64,
            ..MshvRootHvcall::default()
        };
        let arg: *mut MshvRootHvcall = &mut args;
        // SAFETY: `args`, `input` and `output` live across the call; in_sz/out_sz are the
        // exact sizes of the buffers behind in_ptr/out_ptr, so the kernel reads and writes
        // only inside them (mshv_ioctl_passthru_hvcall copies in_sz in and out_sz out).
        let ret =
            unsafe { libc::ioctl(self.file.as_raw_fd(), MSHV_ROOT_HVCALL as libc::Ioctl, arg) };
        let result = if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(output)
        };
        HvcallOutcome {
            result,
            hv_status: args.status,
        }
    }
}

impl Sys for HostSys {
    type Device = HostDevice;

    fn cpuid(&self, leaf: u32) -> Option<CpuidRegs> {
        cpuid_leaf(leaf)
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn stat(&self, path: &Path) -> io::Result<NodeInfo> {
        let meta = std::fs::metadata(path)?;
        let rdev = meta.rdev();
        let kind = node_kind(&meta);
        Ok(NodeInfo {
            kind,
            major: libc::major(rdev),
            minor: libc::minor(rdev),
            ino: meta.ino(),
        })
    }

    fn open(&self, path: &Path) -> io::Result<HostDevice> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)?;
        Ok(HostDevice { file })
    }

    fn file_access(&self, path: &Path) -> io::Result<FileAccess> {
        let meta = std::fs::metadata(path)?;
        Ok(FileAccess {
            kind: node_kind(&meta),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            ino: meta.ino(),
        })
    }

    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))
    }

    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        std::os::unix::fs::chown(path, uid, gid)
    }
}

fn node_kind(meta: &std::fs::Metadata) -> NodeKind {
    let ft = meta.file_type();
    if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else if ft.is_file() {
        NodeKind::Regular
    } else if ft.is_dir() {
        NodeKind::Directory
    } else {
        NodeKind::Other
    }
}

#[cfg(target_arch = "x86_64")]
fn cpuid_leaf(leaf: u32) -> Option<CpuidRegs> {
    // CPUID is unprivileged and always present on x86_64; hypervisor leaves
    // (0x4000_00xx) are answered by the hypervisor, or echo the highest basic leaf on
    // bare metal, which is why callers first check the "hypervisor present" bit.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU.
    let r = unsafe { core::arch::x86_64::__cpuid(leaf) };
    Some(CpuidRegs {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_leaf(_leaf: u32) -> Option<CpuidRegs> {
    None
}

/// Symbolic name of an errno, for people and labels ("EINVAL"); `E<n>` when unknown here.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::ELOOP => "ELOOP",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EBADFD => "EBADFD",
        _ => return format!("E{errno}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_uapi_header() {
        // Values spelled out in include/uapi/linux/mshv.h terms and in the reference notes.
        assert_eq!(MSHV_CREATE_PARTITION, 0x4010_B800);
        assert_eq!(MSHV_ROOT_HVCALL, 0xC020_B807);
        assert_eq!(std::mem::size_of::<MshvCreatePartition>(), 16);
        assert_eq!(std::mem::size_of::<MshvRootHvcall>(), 32);
        assert_eq!(std::mem::size_of::<HvInputGetPartitionProperty>(), 16);
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::EINVAL), "EINVAL");
        assert_eq!(errno_name(libc::ENOTTY), "ENOTTY");
        assert_eq!(errno_name(9999), "E9999");
    }

    #[test]
    fn host_stat_reports_char_devices() {
        let info = HostSys
            .stat(Path::new("/dev/null"))
            .expect("stat /dev/null");
        assert_eq!(info.kind, NodeKind::CharDevice);
        assert_eq!((info.major, info.minor), (1, 3));
        let dir = HostSys.stat(Path::new("/")).expect("stat /");
        assert_eq!(dir.kind, NodeKind::Directory);
    }

    #[test]
    fn ioctl_on_a_non_mshv_fd_is_rejected_not_executed() {
        // /dev/null has no ioctl handler: ENOTTY. Shows the real ioctl path and errno capture.
        let dev = HostSys
            .open(Path::new("/dev/null"))
            .expect("open /dev/null");
        let err = dev
            .create_partition(&FINGERPRINT_ARGS)
            .expect_err("/dev/null must not create partitions");
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
        let out = dev.self_partition_property(HV_PARTITION_PROPERTY_PRIVILEGE_FLAGS);
        assert_eq!(
            out.result
                .expect_err("no hvcall on /dev/null")
                .raw_os_error(),
            Some(libc::ENOTTY)
        );
        assert_eq!(out.hv_status, 0);
    }
}
