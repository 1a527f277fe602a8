//! docs/node-agent.md lists every probe state, every metric the agent exports, every
//! device plugin state and every flag of `run`.

use clap::CommandFactory;
use mshv_node_agent::cli::Cli;
use mshv_node_agent::device_plugin::PluginState;
use mshv_node_agent::metrics::{Metrics, PLUGIN_STATES, SyncResult};
use mshv_node_agent::probe::sys::HostSys;
use mshv_node_agent::probe::{ProbeOptions, Prober, State, hv_build};

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
    metrics.observe_registration(true);
    metrics.observe_device_access(Some("applied"), true);
    metrics.lease_enabled();
    // Families without a series print nothing: give each one a sample (the build check
    // only exists on Hyper-V parent partitions, so set one).
    let mut report = Prober::new(HostSys, ProbeOptions::default()).probe();
    report.hv_build_check = Some(hv_build::check(hv_build::MSHV_HV_MIN_VERSION));
    metrics.observe_probe(&report);
    let text = metrics.encode().expect("encode");
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(families.len(), 14, "{text}");
    for family in families {
        // Counters are documented with their `_total` sample name.
        let documented =
            DOC.contains(&format!("`{family}`")) || DOC.contains(&format!("`{family}_total`"));
        assert!(documented, "metric {family} is not in docs/node-agent.md");
    }
}

#[test]
fn every_device_plugin_state_is_documented_and_exported() {
    let names: Vec<&str> = PluginState::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        names, PLUGIN_STATES,
        "metrics and the plugin agree on states"
    );
    for state in names {
        let row = format!("| `{state}` |");
        assert!(
            DOC.contains(&row),
            "docs/node-agent.md has no row for {row}"
        );
    }
}

#[test]
fn every_run_flag_is_documented() {
    let cmd = Cli::command();
    let run = cmd
        .get_subcommands()
        .find(|c| c.get_name() == "run")
        .expect("run subcommand");
    for arg in run.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        if matches!(long, "help" | "version") {
            continue;
        }
        assert!(
            DOC.contains(&format!("`--{long}")),
            "docs/node-agent.md does not mention --{long}"
        );
    }
}
