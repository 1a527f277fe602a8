//! Binary entry point; everything lives in the library so tests and the bench share it.

fn main() -> std::process::ExitCode {
    mshv_node_agent::cli::main()
}
