//! Text from the host or the VMI, bounded before it reaches a warning, a rejection message, an
//! annotation or a log record: host error text is free text (with `RUST_BACKTRACE` set on the
//! host it carries a whole stack trace), and none of it may flood virt-controller's events.

/// At most this many bytes of a host's error text reach a warning, an annotation or a log.
pub const MAX_CAUSE: usize = 200;

/// The first line of `text`, without control characters, cut to `max` bytes (at a character
/// boundary, marked with `…`). Host error text is free text: with `RUST_BACKTRACE` set on the
/// host it carries a whole stack trace, which must not land in every Pod warning.
pub fn one_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let clean: String = line.chars().filter(|c| !c.is_control()).collect();
    if clean.len() <= max {
        return clean;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &clean[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_error_text_is_one_bounded_line() {
        let backtrace =
            "forbidden: nodes is forbidden\n\nStack backtrace:\n   0: anyhow::error\n   1: ...";
        assert_eq!(one_line(backtrace, 200), "forbidden: nodes is forbidden");
        assert_eq!(one_line("\n  \n second\tline", 200), "secondline");
        let long = "é".repeat(300);
        let cut = one_line(&long, 200);
        assert!(cut.len() <= 200 && cut.ends_with('…'), "{}", cut.len());
        assert_eq!(one_line("", 10), "");
    }
}
