//! `.dockerignore` matching with Docker's own rules.
//!
//! Docker (moby/patternmatcher) cleans each pattern like Go's `filepath.Clean`, strips a leading
//! `/`, lets `**` cross directories, lets `!` re-include, and decides by the *last* matching
//! pattern. A path is also excluded when one of its parent directories matches. Mirroring this
//! exactly matters: the tag is a digest of what Docker would receive.

use regex::Regex;

#[derive(Debug)]
struct Pattern {
    regex: Regex,
    exclusion: bool,
}

/// The compiled `.dockerignore` of one build context.
#[derive(Debug, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

impl DockerIgnore {
    /// Parse the text of a `.dockerignore`. Invalid patterns are skipped, as Docker's
    /// character-class errors would fail the build anyway.
    pub fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    return None;
                }
                let (exclusion, body) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let cleaned = clean(body);
                let cleaned = cleaned.trim_start_matches('/');
                if cleaned.is_empty() || cleaned == "." {
                    return None;
                }
                Some(Pattern {
                    regex: Regex::new(&to_regex(cleaned)).ok()?,
                    exclusion,
                })
            })
            .collect();
        Self { patterns }
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out of the build.
    pub fn is_excluded(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for p in &self.patterns {
            let mut matched = p.regex.is_match(path);
            if !matched && parts.len() > 1 {
                // A pattern that names a parent directory excludes everything beneath it.
                matched = (1..parts.len()).any(|n| p.regex.is_match(&parts[..n].join("/")));
            }
            if matched {
                excluded = !p.exclusion;
            }
        }
        excluded
    }

    /// Whether any pattern re-includes paths, which forbids skipping excluded directories whole.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }
}

/// Go's `filepath.Clean` for `/`-separated paths.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|p| *p != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            p => out.push(p),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// patternmatcher's translation of a pattern to an anchored regular expression.
fn to_regex(pattern: &str) -> String {
    let mut re = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 1;
                if chars.get(i + 1) == Some(&'/') {
                    // "**/" matches zero or more directories.
                    i += 1;
                    re.push_str("(.*/)?");
                } else {
                    re.push_str(".*");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                // Character classes pass through; Go and regex agree on the common forms.
                let end = chars[i..].iter().position(|&c| c == ']').map(|p| p + i);
                match end {
                    Some(end) => {
                        let class: String = chars[i + 1..end].iter().collect();
                        let class = class
                            .strip_prefix('^')
                            .map_or(class.clone(), |c| format!("^{c}"));
                        re.push('[');
                        re.push_str(&class.replace('\\', "\\\\"));
                        re.push(']');
                        i = end;
                    }
                    None => re.push_str("\\["),
                }
            }
            '\\' if i + 1 < chars.len() => {
                i += 1;
                re.push_str(&regex::escape(&chars[i].to_string()));
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    re.push('$');
    re
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_semantics() {
        let ignore = DockerIgnore::parse(
            "# comment\n*.pyc\n/build\n**/__pycache__\nnode_modules\ndocs/**\n!docs/keep.md\n.env\n",
        );
        let cases = [
            ("app.pyc", true),
            ("pkg/app.pyc", false), // `*` does not cross directories
            ("build/out.o", true),  // a parent directory matches
            ("src/build/out.o", false),
            ("a/b/__pycache__/x.pyc", true),
            ("__pycache__/x", true),
            ("node_modules/x/y.js", true),
            ("docs/guide.md", true),
            ("docs/keep.md", false), // the last matching pattern wins
            (".env", true),
            (".env.example", false),
            ("main.py", false),
        ];
        for (path, expected) in cases {
            assert_eq!(ignore.is_excluded(path), expected, "{path}");
        }
    }

    #[test]
    fn cleans_like_go() {
        assert_eq!(clean("./a//b/../c/"), "a/c");
        assert_eq!(clean("/a/.."), "/");
        assert_eq!(clean(".."), "..");
    }
}
