//! Problems in the user's input files, reported the same way everywhere.
//!
//! A [`Diagnostic`] names the file, the line and column, the field, what is wrong and how to fix
//! it. Config loading and rendering produce them; the output module prints them. Building a
//! diagnostic from a serde error (and guessing "did you mean") lives here too, so every strict
//! reader words its errors alike.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::locate::Position;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the user would type it (relative to the working directory when possible).
    pub file: PathBuf,
    pub position: Option<Position>,
    /// The field path inside the file, e.g. `portForward[0].localPort`.
    pub field: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            position: None,
            field: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn at(mut self, position: Option<Position>) -> Self {
        self.position = position;
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        self.field = (!field.is_empty()).then_some(field);
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn maybe_hint(mut self, hint: Option<String>) -> Self {
        if hint.is_some() {
            self.hint = hint;
        }
        self
    }

    /// Turn a serde error (from serde_yaml, possibly wrapped by serde_path_to_error) into a
    /// diagnostic. `path` is the field path serde reached; `position` where it was.
    pub fn from_serde(
        file: &Path,
        path: &str,
        position: Option<Position>,
        message: &str,
    ) -> Diagnostic {
        let message = strip_location(message);
        let hint = hint_for_serde_message(&message);
        Diagnostic::new(file, message)
            .at(position)
            .field(path)
            .maybe_hint(hint)
    }
}

impl Diagnostic {
    /// The diagnostic without its hint: `file:line:col: `field`: message`.
    pub fn headline(&self) -> String {
        let mut out = self.file.display().to_string();
        if let Some(p) = self.position {
            out.push_str(&format!(":{}:{}", p.line, p.column));
        }
        out.push_str(": ");
        if let Some(field) = &self.field {
            out.push_str(&format!("`{field}`: "));
        }
        out.push_str(&self.message);
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.headline())?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// serde_yaml appends " at line L column C" and prefixes "path: "; we print both ourselves.
fn strip_location(message: &str) -> String {
    let message = match message.find(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    // serde_yaml prefixes the path as "a.b[0]: " — drop it when it is one.
    match message.split_once(": ") {
        Some((prefix, rest)) if !prefix.contains(' ') && !prefix.is_empty() && !rest.is_empty() => {
            rest.to_string()
        }
        _ => message.to_string(),
    }
}

/// "did you mean" for serde's unknown-field and unknown-variant messages, which list the
/// expected names: "unknown field `locaPort`, expected one of `resource`, `port`, `localPort`".
fn hint_for_serde_message(message: &str) -> Option<String> {
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return Some(format!("add `{field}:` here"));
    }
    if message.starts_with("invalid type") {
        let expected = message.rsplit("expected ").next().unwrap_or_default();
        let hint = match expected {
            "u16" | "u32" | "u64" | "i32" | "i64" | "usize" => {
                "write a whole number, without quotes"
            }
            "a string" => "write text; quote it if it looks like a number or boolean",
            "a boolean" => "write `true` or `false`",
            "a sequence" => "write a list: one `- item` per line, or `[a, b]`",
            e if e.starts_with("struct") || e == "a map" => "write a mapping of `key: value` lines",
            _ => return None,
        };
        return Some(hint.to_string());
    }
    let kind = ["unknown field `", "unknown variant `"]
        .into_iter()
        .find(|k| message.starts_with(k))?;
    let rest = &message[kind.len()..];
    let (given, expected) = rest.split_once('`')?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match suggest(given, candidates.iter().copied()) {
        Some(best) => Some(format!("did you mean `{best}`?")),
        None if candidates.is_empty() => Some("remove it".to_string()),
        None => Some(format!(
            "remove it, or use one of: {}",
            candidates.join(", ")
        )),
    }
}

/// The candidate closest to `given`, if it is close enough to be a plausible typo.
pub fn suggest<'a>(given: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let given_lower = given.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&given_lower, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let fields = ["resource", "port", "localPort"];
        assert_eq!(suggest("locaPort", fields), Some("localPort"));
        assert_eq!(suggest("localport", fields), Some("localPort"));
        assert_eq!(suggest("zzz", fields), None);
    }

    #[test]
    fn unknown_field_message_gets_a_hint() {
        let d = Diagnostic::from_serde(
            Path::new("devloop.yaml"),
            "portForward[0]",
            Some(Position { line: 3, column: 5 }),
            "portForward[0]: unknown field `locaPort`, expected one of `resource`, `port`, `localPort` at line 3 column 5",
        );
        assert_eq!(
            d.to_string(),
            "devloop.yaml:3:5: `portForward[0]`: unknown field `locaPort`, expected one of `resource`, `port`, `localPort`\n  hint: did you mean `localPort`?"
        );
    }
}
