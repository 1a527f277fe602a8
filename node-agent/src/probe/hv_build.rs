//! The hypervisor builds the kernel's mshv driver was validated against.
//!
//! torvalds/linux drivers/hv/mshv_root.h:24-25 (at bbfd5594756011167b8f8de9a00e0c946afda1e6):
//! `#define MSHV_HV_MIN_VERSION (27744)` / `#define MSHV_HV_MAX_VERSION (27751)`, "Hypervisor
//! must be between these version numbers (inclusive) to guarantee compatibility".
//! `mshv_parent_partition_init()` in drivers/hv/mshv_root_main.c compares
//! `hv_get_hypervisor_version().build_number` with them, and outside the range only logs
//! `dev_err(dev, "Running on unvalidated Hyper-V version\n")` and goes on: the driver still
//! loads and `/dev/mshv` still works. So a build outside the range is a **warning**, never a
//! reason to call a node incapable. The range moves with kernel releases (older trees carry
//! 25212..25330 and 25212..25370), so this is "validated by the mainline driver this agent
//! was written against", not a property of the running kernel.

use serde::Serialize;

/// `MSHV_HV_MIN_VERSION` (drivers/hv/mshv_root.h:24).
pub const MSHV_HV_MIN_VERSION: u32 = 27744;
/// `MSHV_HV_MAX_VERSION` (drivers/hv/mshv_root.h:25).
pub const MSHV_HV_MAX_VERSION: u32 = 27751;

/// The hypervisor build compared with the driver's validated range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HvBuildCheck {
    pub build: u32,
    pub min: u32,
    pub max: u32,
    /// `min <= build <= max`.
    pub supported: bool,
}

pub fn check(build: u32) -> HvBuildCheck {
    HvBuildCheck {
        build,
        min: MSHV_HV_MIN_VERSION,
        max: MSHV_HV_MAX_VERSION,
        supported: (MSHV_HV_MIN_VERSION..=MSHV_HV_MAX_VERSION).contains(&build),
    }
}

impl HvBuildCheck {
    /// One line for people, or `None` when the build is in range.
    pub fn warning(&self) -> Option<String> {
        (!self.supported).then(|| {
            format!(
                "hypervisor build {} is outside {}..={}, the range the mainline mshv driver is validated for (drivers/hv/mshv_root.h); the kernel logs \"Running on unvalidated Hyper-V version\" but still loads the driver",
                self.build, self.min, self.max
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_is_inclusive() {
        assert!(check(27744).supported);
        assert!(check(27751).supported);
        assert!(!check(27743).supported);
        assert!(!check(27752).supported);
        assert!(!check(26102).supported);
        assert!(check(26102).warning().is_some_and(|w| w.contains("26102")));
        assert_eq!(check(27750).warning(), None);
    }
}
