//! Which changed paths matter, and to whom.
//!
//! Owns the ignore rules of the watcher (`.git`, editor temp files, each artifact's
//! `.dockerignore`, the project's top-level `.gitignore` and `.devloopignore`) and the mapping of
//! a path to the artifacts whose build context holds it, or to the project configuration
//! (`devloop.yaml`, profiles, manifests, secret env files). It reads ignore files; it never reads
//! the files it classifies.

use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::build::ignore::DockerIgnore;
use crate::config::{PROFILES_DIR, PROJECT_FILE, Project};

/// Why a path was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IgnoreReason {
    Git,
    Editor,
    DevloopIgnore,
    GitIgnore,
    DockerIgnore,
}

impl IgnoreReason {
    /// How the reason reads in "ignored 3 changes (.dockerignore)".
    pub fn label(self) -> &'static str {
        match self {
            IgnoreReason::Git => ".git",
            IgnoreReason::Editor => "editor temp files",
            IgnoreReason::DevloopIgnore => ".devloopignore",
            IgnoreReason::GitIgnore => ".gitignore",
            IgnoreReason::DockerIgnore => ".dockerignore",
        }
    }
}

/// What a path is to the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    Ignored(IgnoreReason),
    /// `devloop.yaml`, a profile, a manifest or a secret env file: redeploy without a rebuild.
    Config,
    /// Inputs of these artifacts: `(index in project.artifacts, path relative to its context)`.
    Artifacts(Vec<(usize, String)>),
    /// In the project but in no build context and no configuration.
    Outside,
}

impl Class {
    /// Whether the watcher must keep track of the file's content.
    pub fn is_relevant(&self) -> bool {
        matches!(self, Class::Config | Class::Artifacts(_))
    }
}

#[derive(Debug)]
struct Scope {
    context: PathBuf,
    dockerfile: PathBuf,
    ignore: DockerIgnore,
}

/// The compiled rules for one project.
#[derive(Debug)]
pub struct Filter {
    root: PathBuf,
    config_files: Vec<PathBuf>,
    config_dirs: Vec<PathBuf>,
    scopes: Vec<Scope>,
    gitignore: Gitignore,
    devloopignore: Gitignore,
}

/// Files whose change alters the rules themselves.
pub const RULE_FILES: [&str; 3] = [".dockerignore", ".gitignore", ".devloopignore"];

impl Filter {
    /// Compile the rules of `project`. Unreadable or invalid ignore files count as empty: the
    /// watcher then sees more, never less.
    pub fn new(project: &Project) -> Self {
        let root = project.root.clone();
        let mut config_files = vec![project.file.clone()];
        let mut config_dirs = vec![root.join(PROFILES_DIR)];
        for m in &project.manifests {
            if m.path.is_dir() {
                config_dirs.push(m.path.clone());
            } else {
                config_files.push(m.path.clone());
            }
        }
        for s in &project.secrets {
            config_files.push(s.env_file.clone());
        }
        if let Some(job) = project.backup.as_ref().and_then(|b| b.restore_job.clone()) {
            config_files.push(job);
        }
        if let Some(file) = &project.profile.file {
            config_files.push(file.clone());
        }
        let scopes = project
            .artifacts
            .iter()
            .map(|a| Scope {
                context: a.context.clone(),
                dockerfile: a.dockerfile.clone(),
                ignore: std::fs::read_to_string(a.context.join(".dockerignore"))
                    .map(|text| DockerIgnore::parse(&text))
                    .unwrap_or_default(),
            })
            .collect();
        Self {
            gitignore: gitignore(&root, ".gitignore"),
            devloopignore: gitignore(&root, ".devloopignore"),
            root,
            config_files,
            config_dirs,
            scopes,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Classify `path` (absolute, below the project root).
    pub fn classify(&self, path: &Path, is_dir: bool) -> Class {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return Class::Outside;
        };
        if rel.components().any(|c| c.as_os_str() == ".git") {
            return Class::Ignored(IgnoreReason::Git);
        }
        if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && is_editor_temp(name)
        {
            return Class::Ignored(IgnoreReason::Editor);
        }
        if self.config_files.iter().any(|f| f == path)
            || (!is_dir && self.config_dirs.iter().any(|d| path.starts_with(d)))
            || path == self.root.join(PROJECT_FILE)
        {
            return Class::Config;
        }
        if self
            .devloopignore
            .matched_path_or_any_parents(rel, is_dir)
            .is_ignore()
        {
            return Class::Ignored(IgnoreReason::DevloopIgnore);
        }
        if self
            .gitignore
            .matched_path_or_any_parents(rel, is_dir)
            .is_ignore()
        {
            return Class::Ignored(IgnoreReason::GitIgnore);
        }
        let mut owners = Vec::new();
        let mut excluded = false;
        for (i, scope) in self.scopes.iter().enumerate() {
            let Ok(in_context) = path.strip_prefix(&scope.context) else {
                continue;
            };
            let rel = slash_path(in_context);
            if path == scope.dockerfile || rel == ".dockerignore" {
                // Both feed the tag even when `.dockerignore` names them.
                owners.push((i, rel));
            } else if rel.is_empty() || is_dir {
                continue;
            } else if scope.ignore.is_excluded(&rel) {
                excluded = true;
            } else {
                owners.push((i, rel));
            }
        }
        match (owners.is_empty(), excluded) {
            (false, _) => Class::Artifacts(owners),
            (true, true) => Class::Ignored(IgnoreReason::DockerIgnore),
            (true, false) => Class::Outside,
        }
    }

    /// Whether a directory can be skipped whole when scanning (nothing below it matters).
    pub fn skip_dir(&self, path: &Path) -> bool {
        match self.classify(path, true) {
            Class::Ignored(IgnoreReason::DockerIgnore) | Class::Outside => false,
            Class::Ignored(_) => !self.config_dirs.iter().any(|d| d.starts_with(path)),
            _ => false,
        }
    }
}

fn gitignore(root: &Path, name: &str) -> Gitignore {
    let mut builder = GitignoreBuilder::new(root);
    let file = root.join(name);
    if file.is_file() {
        // A bad line is skipped by the builder; the rest still applies.
        let _ = builder.add(&file);
    }
    builder.build().unwrap_or_else(|_| Gitignore::empty())
}

/// `/`-separated, as `.dockerignore` and sync rules expect.
pub fn slash_path(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Swap, backup and lock files editors write next to the real one.
pub fn is_editor_temp(name: &str) -> bool {
    const SUFFIXES: [&str; 8] = [
        "~",
        ".swp",
        ".swo",
        ".swx",
        ".tmp",
        ".kate-swp",
        ".crswap",
        ".bak",
    ];
    name == "4913"                     // vim's probe for a writable directory
        || name == ".DS_Store"
        || name.starts_with(".#")       // emacs lock files
        || (name.starts_with('#') && name.ends_with('#'))
        || name.starts_with(".goutputstream-")
        || name.contains("___jb_")      // JetBrains safe-write
        || SUFFIXES.iter().any(|s| name.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_temp_files() {
        for name in [
            ".index.html.swp",
            "index.html~",
            ".#index.html",
            "4913",
            "#a.py#",
            "a.py___jb_tmp___",
        ] {
            assert!(is_editor_temp(name), "{name}");
        }
        for name in ["index.html", "Dockerfile", "swp.py", "a.tmpl"] {
            assert!(!is_editor_temp(name), "{name}");
        }
    }
}
