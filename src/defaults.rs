//! The embedded defaults: the repository's top-level `k8s/` and `profiles/`, compiled in.
//!
//! `devloop init` writes them into a new project after replacing two placeholders:
//! [`NAME_PLACEHOLDER`] (the project name) and [`IMAGE_PLACEHOLDER`] (the app image).

use include_dir::{Dir, DirEntry, include_dir};

static K8S: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/k8s");
static PROFILES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/profiles");

pub const NAME_PLACEHOLDER: &str = "__NAME__";
pub const IMAGE_PLACEHOLDER: &str = "__IMAGE__";

/// A default file: its path relative to the project root, and its text with placeholders.
pub struct DefaultFile {
    pub path: String,
    pub template: &'static str,
}

impl DefaultFile {
    pub fn render(&self, name: &str, image: &str) -> String {
        self.template
            .replace(NAME_PLACEHOLDER, name)
            .replace(IMAGE_PLACEHOLDER, image)
    }
}

/// Every default file, sorted by path.
pub fn files() -> Vec<DefaultFile> {
    let mut out = Vec::new();
    for (prefix, dir) in [("k8s", &K8S), ("profiles", &PROFILES)] {
        collect(prefix, dir, &mut out);
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn collect(prefix: &str, dir: &'static Dir<'static>, out: &mut Vec<DefaultFile>) {
    for entry in dir.entries() {
        match entry {
            DirEntry::Dir(d) => collect(prefix, d, out),
            DirEntry::File(f) => {
                if let Some(template) = f.contents_utf8() {
                    out.push(DefaultFile {
                        path: format!("{prefix}/{}", f.path().display()),
                        template,
                    });
                }
            }
        }
    }
}
