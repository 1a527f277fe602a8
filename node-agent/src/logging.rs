//! JSON logs on stderr (stdout is reserved for `probe` output).
//!
//! The node name is carried by a root span (`agent{node=...}`) that `run` and `cleanup`
//! enter and attach to every task they spawn; the JSON formatter prints the current span
//! on each line, so every line names its node (tests/cli.rs checks this).

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Install the JSON subscriber. `level` applies to the agent; dependencies (kube, hyper,
/// rustls) log at WARN at most, so a chatty client cannot drown the agent's own lines.
pub fn init_json(level: LevelFilter) {
    let filter = Targets::new()
        .with_default(level.min(LevelFilter::WARN))
        .with_target("mshv_node_agent", level);
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_writer(std::io::stderr);
    // A second init (tests calling into the library) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .try_init();
}
