//! Kubernetes name syntax, as the API server checks it
//! (k8s.io/apimachinery/pkg/util/validation: IsQualifiedName, IsDNS1123Subdomain,
//! and k8s.io/kubernetes/pkg/apis/core/helper IsExtendedResourceName).

const QUALIFIED_NAME_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
pub fn check_name_part(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > QUALIFIED_NAME_MAX {
        return Err(format!("name part {name:?} must be 1-63 characters"));
    }
    let bytes = name.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_alphanumeric();
    if !edge_ok(bytes[0]) || !edge_ok(bytes[bytes.len() - 1]) {
        return Err(format!(
            "name part {name:?} must start and end with a letter or digit"
        ));
    }
    if !bytes
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(format!(
            "name part {name:?} may contain only letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// A lowercase RFC 1123 subdomain, at most 253 characters.
pub fn check_dns_subdomain(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!("prefix {prefix:?} must be 1-253 characters"));
    }
    for label in prefix.split('.') {
        let b = label.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-';
        if !ok {
            return Err(format!(
                "prefix {prefix:?} is not a lowercase DNS subdomain"
            ));
        }
    }
    Ok(())
}

/// An object name or namespace: a lowercase RFC 1123 subdomain (namespaces are the stricter
/// DNS label, which the API server checks for us: a wrong one is simply not found).
pub fn check_object_name(name: &str) -> Result<(), String> {
    check_dns_subdomain(name).map_err(|_| format!("{name:?} is not a lowercase DNS-1123 name"))
}

/// A label key: optional `prefix/` plus a name part.
pub fn check_label_key(key: &str) -> Result<(), String> {
    match key.split_once('/') {
        Some((prefix, name)) => {
            check_dns_subdomain(prefix)?;
            check_name_part(name)
        }
        None => check_name_part(key),
    }
    .map_err(|m| format!("{key:?} is not a valid label key: {m}"))
}

/// An extended resource name: a qualified name with a domain prefix outside `kubernetes.io`
/// (the API server refuses unprefixed or `kubernetes.io/` extended resources).
pub fn check_extended_resource(name: &str) -> Result<(), String> {
    let Some((prefix, _)) = name.split_once('/') else {
        return Err(format!(
            "{name:?} is not an extended resource name: it needs a domain prefix, e.g. devices.kubevirt.io/mshv"
        ));
    };
    if prefix == "kubernetes.io" || prefix.ends_with(".kubernetes.io") || prefix == "requests" {
        return Err(format!(
            "{name:?} is not an extended resource name: the kubernetes.io domain is reserved"
        ));
    }
    check_label_key(name).map_err(|m| m.replace("label key", "resource name"))
}

/// A label value: empty, or a name part.
pub fn is_label_value(value: &str) -> bool {
    value.is_empty() || check_name_part(value).is_ok()
}

/// Whether `domain` is a lowercase RFC 1123 subdomain (a label key's prefix, without `/`).
pub fn is_dns_subdomain(domain: &str) -> bool {
    check_dns_subdomain(domain).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys() {
        for ok in [
            "mshv.node.hyperv-layered.io/capable",
            "capable",
            "a/b",
            "example.com/A_b.c-9",
        ] {
            assert!(check_label_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/x",
            "x/",
            "Example.com/x",
            "a b",
            "-x",
            "x-",
            "a/b/c",
            &"x".repeat(64),
            &format!("{}/x", "a".repeat(254)),
        ] {
            assert!(check_label_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn extended_resources() {
        assert!(check_extended_resource("devices.kubevirt.io/mshv").is_ok());
        for bad in ["mshv", "kubernetes.io/x", "node.kubernetes.io/x", "a/b c"] {
            assert!(check_extended_resource(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_values() {
        assert!(is_label_value(""));
        assert!(is_label_value("mshv"));
        assert!(!is_label_value("a b"));
        assert!(!is_label_value(&"x".repeat(64)));
    }
}
