//! Secrets generated from local `.env`-style files.
//!
//! The file is read at render time and never copied anywhere but into the Secret. Values are
//! masked in everything devloop prints unless the user asks for them (`--show-secrets`).

use indexmap::IndexMap;
use serde_json::{Map, Value, json};

use super::manifest::{Object, Source};
use crate::config::{SecretSource, Tier, shown};
use crate::diagnostic::Diagnostic;

pub const MASK: &str = "<masked>";

pub fn generate(source: &SecretSource) -> Result<Object, Diagnostic> {
    let text = match std::fs::read_to_string(&source.env_file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let env = shown(&source.env_file);
            let hint = match &source.example {
                Some(example) if example.is_file() => format!(
                    "copy the example and edit it: `cp {} {}` (keep {} out of version control)",
                    shown(example).display(),
                    env.display(),
                    env.display()
                ),
                _ => format!("create {} with KEY=VALUE lines", env.display()),
            };
            return Err(source
                .origin
                .diagnostic(format!(
                    "env file {} for Secret `{}` does not exist",
                    env.display(),
                    source.name
                ))
                .field(format!("{}.envFile", source.origin.field))
                .hint(hint));
        }
        Err(e) => {
            return Err(source.origin.diagnostic(format!(
                "failed to read {}: {e}",
                shown(&source.env_file).display()
            )));
        }
    };
    let data = parse_env(&text).map_err(|(line, message)| {
        Diagnostic::new(shown(&source.env_file), message)
            .at(Some(crate::config::locate::Position { line, column: 1 }))
            .hint("write one KEY=VALUE per line; quote values with spaces")
    })?;
    let string_data: Map<String, Value> = data.into_iter().map(|(k, v)| (k, v.into())).collect();
    let value = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": source.name},
        "type": "Opaque",
        "stringData": string_data,
    });
    Ok(Object {
        value: value.as_object().cloned().expect("a literal object"),
        tier: Tier::Persistent,
        source: Source::Generated(source.origin.clone()),
    })
}

/// Parse `KEY=VALUE` lines: `#` comments, blank lines, an optional `export `, and values in
/// single quotes (literal) or double quotes (with `\n`, `\"` and `\\` escapes).
pub fn parse_env(text: &str) -> Result<IndexMap<String, String>, (usize, String)> {
    let mut out = IndexMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err((line_no, format!("line {line_no} is not KEY=VALUE")));
        };
        let key = key.trim();
        let valid_key = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid_key {
            return Err((line_no, format!("`{key}` is not a valid Secret key")));
        }
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('"') {
            let Some(inner) = inner.strip_suffix('"') else {
                return Err((line_no, format!("unterminated double quote in `{key}`")));
            };
            inner
                .replace("\\n", "\n")
                .replace("\\\"", "\"")
                .replace("\\\\", "\\")
        } else if let Some(inner) = value.strip_prefix('\'') {
            let Some(inner) = inner.strip_suffix('\'') else {
                return Err((line_no, format!("unterminated single quote in `{key}`")));
            };
            inner.to_string()
        } else {
            // An unquoted value ends at an inline comment.
            value
                .split(" #")
                .next()
                .unwrap_or_default()
                .trim_end()
                .to_string()
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// Replace every value of a Secret's `data` and `stringData` by [`MASK`].
pub fn mask(object: &mut Map<String, Value>) {
    if object.get("kind").and_then(Value::as_str) != Some("Secret") {
        return;
    }
    for field in ["data", "stringData"] {
        if let Some(Value::Object(map)) = object.get_mut(field) {
            for value in map.values_mut() {
                *value = MASK.into();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_files() {
        let env = parse_env("# c\n\nA=1\nexport B = two words # note\nC=\"x\\ny\"\nD='$raw'\nE=\n")
            .unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "two words");
        assert_eq!(env["C"], "x\ny");
        assert_eq!(env["D"], "$raw");
        assert_eq!(env["E"], "");
        assert_eq!(parse_env("A=1\nnope\n").unwrap_err().0, 2);
    }
}
