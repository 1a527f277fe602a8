//! Pure mapping from a probe report to the labels and annotation the agent owns.
//!
//! Labels carry only what a scheduler selects on (short, stable values); the
//! diagnostics (errno, reason, kernel) go in one JSON annotation, which has no
//! 63-character limit. Nothing in either changes unless the probe result changes: the
//! agent's liveness is in its Lease (`publish::lease`), not on the Node. Every value passes through [`sanitize_label_value`], so even a
//! strange kernel or hypervisor string can never make the API server reject the apply.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use thiserror::Error;

use crate::probe::ProbeReport;

/// Field manager of every server-side apply the agent makes.
pub const FIELD_MANAGER: &str = "mshv-node-agent";
/// Default prefix; the policy's default node label is `<this>capable` (both from the shared
/// `vocab` crate, so they cannot drift apart).
pub const DEFAULT_PREFIX: &str = vocab::NODE_LABEL_PREFIX;

pub const KEY_CAPABLE: &str = vocab::CAPABLE;
pub const KEY_PARTITION_TYPE: &str = vocab::PARTITION_TYPE;
pub const KEY_HV_BUILD: &str = vocab::HV_BUILD;
pub const KEY_UAPI: &str = vocab::UAPI;
pub const KEY_PROBE: &str = vocab::PROBE;
pub const KEY_GUEST_VERIFIED: &str = vocab::GUEST_VERIFIED;
/// Every label name the agent may set (for cleanup).
pub const LABEL_NAMES: [&str; 5] = [
    KEY_CAPABLE,
    KEY_PARTITION_TYPE,
    KEY_HV_BUILD,
    KEY_UAPI,
    KEY_GUEST_VERIFIED,
];

const MAX_LABEL_VALUE: usize = 63;
const MAX_PREFIX: usize = 253;
const MAX_REASON: usize = 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PrefixError {
    #[error("label prefix is empty")]
    Empty,
    #[error("label prefix {0:?} is longer than 253 characters")]
    TooLong(String),
    #[error("label prefix {0:?} is not a lowercase DNS subdomain followed by '/'")]
    NotDnsSubdomain(String),
    #[error("label prefix {0:?} is reserved for Kubernetes (kubernetes.io, k8s.io)")]
    Reserved(String),
}

/// A validated `<dns-subdomain>/` label prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelPrefix(String);

impl LabelPrefix {
    /// `<prefix><name>`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for LabelPrefix {
    fn default() -> Self {
        Self(DEFAULT_PREFIX.to_string())
    }
}

impl fmt::Display for LabelPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for LabelPrefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let domain = s.trim().trim_end_matches('/');
        if domain.is_empty() {
            return Err(PrefixError::Empty);
        }
        if domain.len() > MAX_PREFIX {
            return Err(PrefixError::TooLong(domain.to_string()));
        }
        if !vocab::names::is_dns_subdomain(domain) {
            return Err(PrefixError::NotDnsSubdomain(s.to_string()));
        }
        let reserved = ["kubernetes.io", "k8s.io"]
            .iter()
            .any(|r| domain == *r || domain.ends_with(&format!(".{r}")));
        if reserved {
            return Err(PrefixError::Reserved(domain.to_string()));
        }
        Ok(Self(format!("{domain}/")))
    }
}

/// True when `v` is a valid Kubernetes label value: empty, or ≤ 63 chars of
/// `[A-Za-z0-9_.-]` with an alphanumeric first and last character.
pub fn is_valid_label_value(v: &str) -> bool {
    vocab::names::is_label_value(v)
}

/// Map anything to a valid label value: other characters become '-', at most 63 are kept,
/// and non-alphanumerics are trimmed from both ends (possibly leaving "").
pub fn sanitize_label_value(raw: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_LABEL_VALUE)
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The diagnostic annotation. It has no timestamp on purpose: a field that changed on
/// every write would make every write a Node change that every Node watcher receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeAnnotation {
    pub state: String,
    pub capable: bool,
    pub errno: Option<i32>,
    pub errno_name: Option<String>,
    pub reason: String,
    pub partition_type: String,
    pub hv_build: Option<u32>,
    pub uapi: Option<String>,
    pub kernel: Option<String>,
    pub agent_version: String,
}

/// Everything the agent wants on its Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub labels: BTreeMap<String, String>,
    pub annotation_key: String,
    pub annotation: ProbeAnnotation,
}

impl Desired {
    /// The annotation value: the diagnostics as one JSON object.
    pub fn annotation_value(&self) -> String {
        serde_json::json!(self.annotation).to_string()
    }
}

pub fn agent_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Build the desired labels and annotation from a report.
pub fn desired(report: &ProbeReport, prefix: &LabelPrefix) -> Desired {
    let mut labels = BTreeMap::new();
    let mut put = |name: &str, value: &str| {
        let v = sanitize_label_value(value);
        if !v.is_empty() {
            labels.insert(prefix.key(name), v);
        }
    };
    // `capable` is present only when capable: omitting it from the next apply makes the
    // API server drop it, and nodeSelectors/affinity on `=true` stop matching at once.
    if report.capable {
        put(KEY_CAPABLE, "true");
    }
    put(KEY_PARTITION_TYPE, report.partition_type.as_str());
    if let Some(build) = report.hv_build {
        put(KEY_HV_BUILD, &build.to_string());
    }
    if let Some(uapi) = report.uapi {
        put(KEY_UAPI, uapi.as_str());
    }
    let annotation = ProbeAnnotation {
        state: report.state.as_str().to_string(),
        capable: report.capable,
        errno: report.errno,
        errno_name: report.errno_name.clone(),
        reason: report.reason.chars().take(MAX_REASON).collect(),
        partition_type: report.partition_type.as_str().to_string(),
        hv_build: report.hv_build,
        uapi: report.uapi.map(|u| u.as_str().to_string()),
        kernel: report.kernel_release.clone(),
        agent_version: agent_version().to_string(),
    };
    Desired {
        labels,
        annotation_key: prefix.key(KEY_PROBE),
        annotation,
    }
}

/// Add (`Some`) or leave out (`None`: not tried) `<prefix>guest-verified=true|false`.
/// Kept apart from [`desired`]: the verification runs on its own schedule, not per probe.
pub fn set_guest_verified(desired: &mut Desired, prefix: &LabelPrefix, verified: Option<bool>) {
    let key = prefix.key(KEY_GUEST_VERIFIED);
    match verified {
        Some(v) => {
            desired.labels.insert(key, v.to_string());
        }
        None => {
            desired.labels.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_verified_label_is_set_replaced_and_withdrawn() {
        let mut d = Desired {
            labels: BTreeMap::new(),
            annotation_key: String::new(),
            annotation: ProbeAnnotation {
                state: String::new(),
                capable: false,
                errno: None,
                errno_name: None,
                reason: String::new(),
                partition_type: String::new(),
                hv_build: None,
                uapi: None,
                kernel: None,
                agent_version: String::new(),
            },
        };
        let p = LabelPrefix::default();
        set_guest_verified(&mut d, &p, Some(true));
        assert_eq!(
            d.labels
                .get(vocab::GUEST_VERIFIED_NODE_LABEL)
                .map(String::as_str),
            Some("true")
        );
        set_guest_verified(&mut d, &p, Some(false));
        assert_eq!(
            d.labels
                .get(vocab::GUEST_VERIFIED_NODE_LABEL)
                .map(String::as_str),
            Some("false")
        );
        set_guest_verified(&mut d, &p, None);
        assert!(d.labels.is_empty());
    }

    #[test]
    fn prefix_validation() {
        assert_eq!(
            "mshv.node.hyperv-layered.io/"
                .parse::<LabelPrefix>()
                .map(|p| p.key("capable")),
            Ok("mshv.node.hyperv-layered.io/capable".to_string())
        );
        assert_eq!(
            "example.com".parse::<LabelPrefix>().map(|p| p.to_string()),
            Ok("example.com/".to_string())
        );
        assert!(matches!(
            "feature.node.kubernetes.io/".parse::<LabelPrefix>(),
            Err(PrefixError::Reserved(_))
        ));
        assert!(matches!(
            "k8s.io".parse::<LabelPrefix>(),
            Err(PrefixError::Reserved(_))
        ));
        assert!(matches!(
            "Upper.Case/".parse::<LabelPrefix>(),
            Err(PrefixError::NotDnsSubdomain(_))
        ));
        assert!(matches!(
            "a..b/".parse::<LabelPrefix>(),
            Err(PrefixError::NotDnsSubdomain(_))
        ));
        assert!(matches!(
            "/".parse::<LabelPrefix>(),
            Err(PrefixError::Empty)
        ));
        // Not reserved: merely ends with the letters, not the domain.
        assert!("notkubernetes.io".parse::<LabelPrefix>().is_ok());
    }

    #[test]
    fn sanitize_examples() {
        assert_eq!(sanitize_label_value("6.18.0-rc1+"), "6.18.0-rc1");
        assert_eq!(sanitize_label_value("--x--"), "x");
        assert_eq!(sanitize_label_value("ÿ"), "");
        assert_eq!(sanitize_label_value(&"a".repeat(100)).len(), 63);
        assert!(is_valid_label_value(""));
        assert!(!is_valid_label_value("-a"));
        assert!(!is_valid_label_value("a b"));
    }
}
