//! docs/node-agent.md lists every probe state and every metric the agent exports.

use mshv_node_agent::metrics::{Metrics, SyncResult};
use mshv_node_agent::probe::sys::HostSys;
use mshv_node_agent::probe::{ProbeOptions, Prober, State};

const DOC: &str = include_str!("../../docs/node-agent.md");

#[test]
fn every_state_has_a_row() {
    for state in State::ALL {
        let row = format!("| `{}` |", state.as_str());
        assert!(
            DOC.contains(&row),
            "docs/node-agent.md has no row for {row}"
        );
    }
}

#[test]
fn every_metric_is_documented() {
    let metrics = Metrics::new();
    metrics.observe_sync(SyncResult::Applied);
    // Families without a series print nothing: give each one a sample.
    metrics.observe_probe(&Prober::new(HostSys, ProbeOptions::default()).probe());
    let text = metrics.encode().expect("encode");
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(families.len(), 4, "{text}");
    for family in families {
        // Counters are documented with their `_total` sample name.
        let documented =
            DOC.contains(&format!("`{family}`")) || DOC.contains(&format!("`{family}_total`"));
        assert!(documented, "metric {family} is not in docs/node-agent.md");
    }
}
