//! Pure parsers for the two kernel text files that say where the mshv misc device lives.
//! They take arbitrary input (a container may mount anything at the host root) and never
//! panic; see the property tests in tests/proptest_parsers.rs.

use thiserror::Error;

/// Major number of every misc device (include/linux/major.h `MISC_MAJOR`).
pub const MISC_MAJOR: u32 = 10;

/// Find the minor number of misc device `name` in `/proc/misc` text.
///
/// Each line is `"%3i %s\n"` (drivers/char/misc.c `misc_seq_show`): a right-aligned minor,
/// one space, the name. Lines that do not fit are skipped rather than failing the whole
/// file, so one odd driver cannot hide mshv.
pub fn misc_minor(proc_misc: &str, name: &str) -> Option<u32> {
    proc_misc.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let minor = parts.next()?.parse::<u32>().ok()?;
        let entry = parts.next()?;
        (entry == name && parts.next().is_none()).then_some(minor)
    })
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DevNumberError {
    #[error("expected MAJOR:MINOR, got {0:?}")]
    Malformed(String),
}

/// Parse a sysfs `dev` attribute (`"10:123\n"`, drivers/base/core.c `dev_show`).
pub fn sysfs_dev_numbers(text: &str) -> Result<(u32, u32), DevNumberError> {
    let trimmed = text.trim();
    let malformed = || DevNumberError::Malformed(trimmed.chars().take(64).collect());
    let (major, minor) = trimmed.split_once(':').ok_or_else(malformed)?;
    let major = major.parse::<u32>().map_err(|_| malformed())?;
    let minor = minor.parse::<u32>().map_err(|_| malformed())?;
    Ok((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "234 btrfs-control\n259 cpu_dma_latency\n 58 mshv\n232 kvm\n";

    #[test]
    fn finds_mshv_with_padding() {
        assert_eq!(misc_minor(SAMPLE, "mshv"), Some(58));
        assert_eq!(misc_minor(SAMPLE, "kvm"), Some(232));
    }

    #[test]
    fn absent_and_prefix_names_do_not_match() {
        assert_eq!(misc_minor(SAMPLE, "mshv_vtl"), None);
        assert_eq!(misc_minor("123 mshv_vtl\n", "mshv"), None);
        assert_eq!(misc_minor("", "mshv"), None);
        assert_eq!(misc_minor("xx mshv\n", "mshv"), None);
        assert_eq!(misc_minor("12 mshv extra\n", "mshv"), None);
    }

    #[test]
    fn skips_garbage_lines() {
        assert_eq!(
            misc_minor("garbage\n\n-1 mshv\n 77 mshv\n", "mshv"),
            Some(77)
        );
    }

    #[test]
    fn sysfs_dev() {
        assert_eq!(sysfs_dev_numbers("10:58\n"), Ok((10, 58)));
        assert!(sysfs_dev_numbers("10-58").is_err());
        assert!(sysfs_dev_numbers(":").is_err());
        assert!(sysfs_dev_numbers("10:99999999999").is_err());
    }
}
