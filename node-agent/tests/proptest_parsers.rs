//! Property tests: the /proc/misc and sysfs parsers and the label/annotation builder on
//! arbitrary input never panic, and every label they produce is a valid Kubernetes label.

use mshv_node_agent::labels::{self, LabelPrefix, is_valid_label_value, sanitize_label_value};
use mshv_node_agent::probe::procfs::{misc_minor, sysfs_dev_numbers};
use mshv_node_agent::probe::sys::errno_name;
use mshv_node_agent::probe::{PartitionType, ProbeReport, State, Uapi};
use proptest::prelude::*;

fn is_valid_label_key(key: &str) -> bool {
    let Some((prefix, name)) = key.rsplit_once('/') else {
        return false;
    };
    let prefix_ok = prefix.len() <= 253
        && prefix.split('.').all(|p| {
            !p.is_empty()
                && p.len() <= 63
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && p.as_bytes()[0].is_ascii_alphanumeric()
                && p.as_bytes()[p.len() - 1].is_ascii_alphanumeric()
        });
    prefix_ok && !name.is_empty() && is_valid_label_value(name)
}

fn partition_types() -> impl Strategy<Value = PartitionType> {
    prop::sample::select(vec![
        PartitionType::Root,
        PartitionType::L1vh,
        PartitionType::Guest,
        PartitionType::None,
        PartitionType::Unknown,
    ])
}

fn reports() -> impl Strategy<Value = ProbeReport> {
    (
        prop::sample::select(State::ALL.to_vec()),
        partition_types(),
        any::<Option<u32>>(),
        prop::option::of(prop::sample::select(vec![
            Uapi::Mainline,
            Uapi::MainlineHvcall,
            Uapi::Unknown,
        ])),
        any::<Option<i32>>(),
        ".*",
        prop::option::of(".*"),
    )
        .prop_map(
            |(state, pt, build, uapi, errno, reason, kernel)| ProbeReport {
                capable: state == State::Capable,
                state,
                reason,
                action: state.action().to_string(),
                partition_type: pt,
                hv_vendor: None,
                hv_build: build,
                hv_version: None,
                hv_build_check: build.map(mshv_node_agent::probe::hv_build::check),
                uapi,
                errno,
                errno_name: errno.map(errno_name),
                device: None,
                self_privileges: None,
                partition_created_and_closed: false,
                kernel_release: kernel,
                host_root: "/".into(),
                steps: Vec::new(),
                duration_us: 0,
            },
        )
}

/// `PROPTEST_CASES` cases per property (default 512; `make fuzz` runs more).
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(512);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn misc_parser_never_panics_and_only_reports_real_entries(text in "(?s).*", name in "[a-z_]{1,12}") {
        if let Some(minor) = misc_minor(&text, &name) {
            let found = text.lines().any(|l| {
                let t: Vec<&str> = l.split_whitespace().collect();
                t.len() == 2 && t[0].parse::<u32>() == Ok(minor) && t[1] == name
            });
            prop_assert!(found);
        }
    }

    #[test]
    fn misc_parser_finds_the_first_entry_in_well_formed_files(
        entries in prop::collection::vec((0u32..1024, "[a-z][a-z0-9_-]{0,15}"), 0..40),
        mshv_at in any::<prop::sample::Index>(),
        mshv_minor in 0u32..1024,
    ) {
        let mut entries = entries;
        let pos = mshv_at.index(entries.len() + 1);
        entries.insert(pos, (mshv_minor, "mshv".to_string()));
        let text: String = entries.iter().map(|(m, n)| format!("{m:>3} {n}\n")).collect();
        let expected = entries.iter().find(|(_, n)| n == "mshv").map(|(m, _)| *m);
        prop_assert_eq!(misc_minor(&text, "mshv"), expected);
    }

    #[test]
    fn sysfs_parser_never_panics(text in "(?s).*") {
        let _ = sysfs_dev_numbers(&text);
    }

    #[test]
    fn sysfs_parser_round_trips(major in any::<u32>(), minor in any::<u32>()) {
        prop_assert_eq!(sysfs_dev_numbers(&format!("{major}:{minor}\n")), Ok((major, minor)));
    }

    #[test]
    fn sanitized_values_are_always_valid(raw in any::<String>()) {
        let v = sanitize_label_value(&raw);
        prop_assert!(is_valid_label_value(&v), "{:?} -> {:?}", raw, v);
        prop_assert!(v.len() <= 63);
    }

    #[test]
    fn valid_values_survive_sanitizing(v in "[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?") {
        prop_assert_eq!(sanitize_label_value(&v), v);
    }

    #[test]
    fn prefix_parser_never_panics_and_yields_valid_keys(
        raw in prop_oneof![any::<String>(), "[a-z0-9.-]{0,70}/?", "[a-zA-Z0-9.-]{1,300}"],
    ) {
        if let Ok(prefix) = raw.parse::<LabelPrefix>() {
            for name in labels::LABEL_NAMES {
                let key = prefix.key(name);
                prop_assert!(is_valid_label_key(&key), "{:?}", key);
            }
        }
    }

    #[test]
    fn desired_labels_are_always_valid(report in reports()) {
        let prefix = LabelPrefix::default();
        let d = labels::desired(&report, &prefix);
        for (k, v) in &d.labels {
            prop_assert!(is_valid_label_key(k), "key {:?}", k);
            prop_assert!(is_valid_label_value(v), "value {:?}", v);
        }
        prop_assert_eq!(d.labels.contains_key(&prefix.key("capable")), report.capable);
        let ann: serde_json::Value = serde_json::from_str(&d.annotation_value()).expect("annotation is JSON");
        prop_assert_eq!(ann["state"].as_str(), Some(report.state.as_str()));
        // No timestamp: the same report always gives the same Node content, so an idle
        // node is never written again (liveness is the Lease).
        prop_assert!(ann.get("heartbeat").is_none());
        let again = labels::desired(&report, &prefix);
        prop_assert_eq!(&again, &d);
        prop_assert_eq!(again.annotation_value(), d.annotation_value());
        prop_assert!(is_valid_label_key(&d.annotation_key));
    }
}
