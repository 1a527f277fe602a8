//! Anonymous host memory for a guest, unmapped on drop.
#![allow(unsafe_code)]

use std::ptr::NonNull;

use super::backend::BenchError;

/// `size` bytes of private anonymous memory, zero-filled and never touched until the guest
/// (or [`GuestMemory::write`]) does: first-touch measures exactly that fault.
#[derive(Debug)]
pub struct GuestMemory {
    ptr: NonNull<u8>,
    size: usize,
}

impl GuestMemory {
    /// `shared`: `MAP_SHARED` instead of `MAP_PRIVATE` (mshv's own guest test maps guest
    /// memory shared: rust-vmm/mshv@mshv-ioctls-v0.7.0 mshv-ioctls/src/ioctls/vcpu.rs:2035-2045).
    pub fn new(size: usize, shared: bool) -> Result<Self, BenchError> {
        let sharing = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        // SAFETY: a fresh anonymous mapping (no fd, no fixed address) cannot alias any memory
        // Rust knows about; the result is checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                sharing | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let errno = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::ENOMEM);
            return Err(BenchError::Memory { size, errno });
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(BenchError::Memory {
            size,
            errno: libc::ENOMEM,
        })?;
        Ok(Self { ptr, size })
    }

    /// The host virtual address the hypervisor maps the guest memory from.
    pub fn host_addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Copy `bytes` to offset 0 (the guest image); longer input is an error, not a panic.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), BenchError> {
        if bytes.len() > self.size {
            return Err(BenchError::Other(format!(
                "guest image of {} bytes does not fit {} bytes of guest memory",
                bytes.len(),
                self.size
            )));
        }
        // SAFETY: `ptr` is a live mapping of `size` ≥ `bytes.len()` writable bytes owned by
        // `self` (borrowed mutably), and `bytes` cannot overlap a mapping made by `new`.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr(), bytes.len());
        }
        Ok(())
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`size` are exactly what mmap returned; the backends drop the VM
        // (which unmaps the guest side) before its memory (field order), so nothing uses it.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.size);
        }
    }
}
