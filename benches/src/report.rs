//! Output helpers shared by the modes.

use std::time::Duration;

/// Megabytes (10^6 bytes, as Kafka's perf tools count them) per second.
pub(crate) fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

/// Writes one line of the human summary to stderr, so stdout carries only the JSON line.
pub(crate) fn line(text: impl AsRef<str>) {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{}", text.as_ref());
    }
}

/// Prints the machine-readable result: one JSON object, the last line on stdout.
pub(crate) fn json(value: &serde_json::Value) {
    #[allow(clippy::print_stdout)]
    {
        println!("{value}");
    }
}
