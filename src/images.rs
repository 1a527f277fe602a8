//! Launcher images known to run mshv (`launcherImages`).
//!
//! Why a list: an mshv domain needs libvirt's `hyperv` virt type for the QEMU driver (libvirt
//! ≥ 11.10) and QEMU's mshv accelerator (QEMU ≥ 10.2). Stock KubeVirt launcher images pin older
//! versions (kubevirt/kubevirt `hack/rpm-deps.sh`: v1.8.x libvirt 11.9 / QEMU 10.1, v1.9.0
//! libvirt 11.10 / QEMU 10.1), and nothing on the Pod tells a capable image from another: the
//! operator lists the images they built or verified, and only those are switched.
//!
//! An entry is one of
//! - an exact reference as the Pod carries it: `registry/repo:tag` or `registry/repo@sha256:<hex>`;
//! - a repository without tag or digest: that repository at any tag or digest;
//! - a prefix ending in `*`: every reference that starts with the text before the `*`.

/// Longest entry accepted (a registry host, a path and a digest fit well inside).
const MAX_LEN: usize = 512;

/// Why an entry of `launcherImages` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePatternError(pub String);

impl std::fmt::Display for ImagePatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks one entry of `launcherImages`.
pub fn check_pattern(p: &str) -> Result<(), ImagePatternError> {
    let err = |m: &str| Err(ImagePatternError(format!("{p:?}: {m}")));
    if p.is_empty() {
        return err("is empty");
    }
    if p.len() > MAX_LEN {
        return err("is longer than 512 characters");
    }
    if !p
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-/:@+*".contains(c))
    {
        return err(
            "is not an image reference (letters, digits and . _ - / : @ + only, `*` at the end)",
        );
    }
    let body = p.strip_suffix('*').unwrap_or(p);
    if body.contains('*') {
        return err("`*` may only end a prefix");
    }
    if body.is_empty() || body.starts_with('/') {
        return err(
            "a prefix must name at least a registry: `*` alone would switch images that cannot run mshv",
        );
    }
    if body.len() == p.len()
        && let Some((_, digest)) = p.split_once('@')
    {
        let valid = digest.split_once(':').is_some_and(|(alg, hex)| {
            !alg.is_empty()
                && alg
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !valid {
            return err("the digest after `@` must be `<algorithm>:<hex>`, e.g. sha256:…");
        }
    }
    Ok(())
}

/// Whether `image` (the compute container's `image`, as written) matches one pattern.
fn matches(pattern: &str, image: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        return image.starts_with(prefix);
    }
    if image == pattern {
        return true;
    }
    // A repository without tag or digest covers every tag and digest of it. A `:` after the
    // last `/` is a tag (one before it is a registry port).
    let has_tag_or_digest = pattern.contains('@')
        || pattern
            .rsplit_once('/')
            .map_or(pattern, |(_, last)| last)
            .contains(':');
    !has_tag_or_digest
        && image
            .strip_prefix(pattern)
            .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('@'))
}

/// Whether `image` matches any pattern of the list.
pub fn is_listed(patterns: &[String], image: &str) -> bool {
    !image.is_empty() && patterns.iter().any(|p| matches(p, image))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn exact_repository_and_prefix_entries() {
        let by_digest = format!("reg.example:5000/kv/virt-launcher@{DIGEST}");
        let list = vec![
            "reg.example:5000/kv/virt-launcher".to_string(),
            "quay.io/mshv/virt-launcher:v1.9.0-mshv".to_string(),
            "ghcr.io/acme/kv-*".to_string(),
        ];
        for (image, want) in [
            ("reg.example:5000/kv/virt-launcher:v1.9.0", true),
            (by_digest.as_str(), true),
            ("reg.example:5000/kv/virt-launcher", true),
            ("reg.example:5000/kv/virt-launcher-other:v1", false),
            ("reg.example:5000/kv/virt", false),
            ("quay.io/mshv/virt-launcher:v1.9.0-mshv", true),
            ("quay.io/mshv/virt-launcher:v1.9.0", false),
            ("quay.io/mshv/virt-launcher:v1.9.0-mshv2", false),
            ("ghcr.io/acme/kv-launcher:1", true),
            ("ghcr.io/acme/kv", false),
            ("quay.io/kubevirt/virt-launcher:v1.8.2", false),
            ("", false),
        ] {
            assert_eq!(is_listed(&list, image), want, "{image}");
        }
        assert!(!is_listed(&[], "quay.io/kubevirt/virt-launcher:v1.8.2"));
    }

    #[test]
    fn a_tagged_entry_with_a_registry_port_is_exact() {
        let list = vec!["reg:5000/virt-launcher:v1".to_string()];
        assert!(is_listed(&list, "reg:5000/virt-launcher:v1"));
        assert!(!is_listed(&list, "reg:5000/virt-launcher:v1@sha256:00"));
    }

    #[test]
    fn invalid_entries_say_why() {
        for (p, why) in [
            ("", "empty"),
            ("*", "`*` alone"),
            ("/x*", "`*` alone"),
            ("quay.io/*/virt-launcher", "only end"),
            ("quay.io/kv/virt launcher", "not an image reference"),
            ("quay.io/kv/virt-launcher@sha256", "digest"),
            ("quay.io/kv/virt-launcher@sha256:xyz", "digest"),
            ("quay.io/kv/virt-launcher@:abc", "digest"),
        ] {
            let e = check_pattern(p).expect_err(p);
            assert!(e.0.contains(why), "{p}: {e}");
        }
        let long = "a".repeat(513);
        assert!(check_pattern(&long).is_err());
        for ok in [
            "quay.io/kubevirt/virt-launcher:v1.9.0",
            "quay.io/kubevirt/virt-launcher",
            "localhost:5000/kv/*",
            &format!("quay.io/kv/virt-launcher@{DIGEST}"),
        ] {
            assert_eq!(check_pattern(ok), Ok(()), "{ok}");
        }
    }
}
