//! Command output: aligned tables for people, one JSON object per line for scripts. The only
//! place the CLI writes to stdout.

use std::io::Write;

use clap::ValueEnum;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Human,
    Json,
}

/// Collects rows and prints them as a table (human) or JSON lines.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    json: Vec<Value>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table { headers: headers.to_vec(), rows: Vec::new(), json: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>, json: Value) {
        self.rows.push(cells);
        self.json.push(json);
    }

    pub fn print(&self, format: Format) {
        match format {
            Format::Json => {
                for value in &self.json {
                    line(&value.to_string());
                }
            }
            Format::Human => {
                let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
                for row in &self.rows {
                    for (w, cell) in widths.iter_mut().zip(row) {
                        *w = (*w).max(cell.chars().count());
                    }
                }
                let render = |cells: Vec<String>| {
                    let padded: Vec<String> =
                        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
                    padded.join("  ").trim_end().to_owned()
                };
                line(&render(self.headers.iter().map(|h| h.to_string()).collect()));
                for row in &self.rows {
                    line(&render(row.clone()));
                }
            }
        }
    }
}

/// Writes one line to stdout; a closed pipe (`| head`) ends the program quietly.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{text}").is_err() {
        std::process::exit(0);
    }
}

/// A note for the person at the terminal (stderr, so it never mixes into piped output).
pub fn note(text: &str) {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{text}");
    }
}
