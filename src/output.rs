//! Everything devloop prints to the user goes through [`Printer`].
//!
//! Requested output (rendered manifests, JSON) goes to stdout; the story (progress, warnings,
//! errors) to stderr, and `--quiet` silences all of it but errors. Colour follows `--color`,
//! `NO_COLOR` and whether stderr is a terminal. `tracing` is for diagnostics, not for this.

use std::io::{IsTerminal, Write};

use crate::cli::ColorChoice;

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    quiet: bool,
    verbose: u8,
    color: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum Style {
    Ok,
    Warn,
    Error,
    Dim,
    Bold,
}

impl Printer {
    pub fn new(quiet: bool, verbose: u8, color: ColorChoice) -> Self {
        let color = match color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
            }
        };
        Self {
            quiet,
            verbose,
            color,
        }
    }

    pub fn verbose(&self) -> u8 {
        self.verbose
    }

    /// Requested output on stdout; printed even with `--quiet`.
    pub fn data(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        // A closed pipe (`devloop render | head`) is not an error worth a message.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// A line of the story, on stderr.
    pub fn info(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    pub fn warn(&self, line: &str) {
        if !self.quiet {
            eprintln!("{} {line}", self.paint(Style::Warn, "warning:"));
        }
    }

    /// Ask a question on the terminal and read one line of answer. `None` when stdin is not a
    /// terminal: a script gets no prompt and gives no consent. The question is shown even with
    /// `--quiet`, since a prompt nobody sees would hang.
    pub fn ask(&self, question: &str) -> Option<String> {
        use std::io::BufRead;
        if !std::io::stdin().is_terminal() {
            return None;
        }
        {
            // Not held while reading: a Ctrl+C during the question prints on stderr.
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{} {question} ", self.paint(Style::Bold, "?"));
            let _ = err.flush();
        }
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).ok()?;
        Some(answer.trim().to_string())
    }

    /// An error with its cause chain and hint; never silenced.
    pub fn error(&self, message: &str, causes: &[String], hint: Option<&str>) {
        let mut text = format!("{} {message}", self.paint(Style::Error, "error:"));
        for cause in causes {
            text.push_str(&format!("\n  caused by: {cause}"));
        }
        if let Some(hint) = hint {
            text.push_str(&format!("\n  {} {hint}", self.paint(Style::Bold, "hint:")));
        }
        eprintln!("{text}");
    }

    /// One line of a container's log on stdout, as `source | text`; `colour` (any index, stable
    /// per source) picks the source's colour so interleaved pods stay apart. Not silenced by
    /// `--quiet`: logs are asked for (and turned off with `--no-logs`).
    pub fn log_line(&self, source: &str, colour: usize, text: &str) {
        // Colours that read on dark and light terminals, none of them the warning/error ones.
        const PALETTE: [&str; 8] = ["36", "35", "34", "32", "96", "95", "94", "92"];
        let prefix = if self.color {
            format!("\x1b[{}m{source} |\x1b[0m", PALETTE[colour % PALETTE.len()])
        } else {
            format!("{source} |")
        };
        let mut out = std::io::stdout().lock();
        // One write per line, so lines of concurrent streams never interleave mid-line.
        let _ = out.write_all(format!("{prefix} {text}\n").as_bytes());
        let _ = out.flush();
    }

    pub fn paint(&self, style: Style, text: &str) -> String {
        if !self.color {
            return text.to_string();
        }
        let code = match style {
            Style::Ok => "32",
            Style::Warn => "33",
            Style::Error => "31;1",
            Style::Dim => "2",
            Style::Bold => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}
