//! Reading Kubernetes manifests: files and directories of multi-document YAML.
//!
//! Every object remembers where it came from (file, document, and an index of positions), so
//! later checks can point at the exact line. Checks here are the ones a manifest needs before
//! anything else can look at it: it is a mapping with `apiVersion`, `kind` and `metadata.name`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::locate::YamlIndex;
use crate::config::{ManifestSource, Origin, Tier, read_text, shown};
use crate::diagnostic::Diagnostic;

/// One Kubernetes object and where it came from.
#[derive(Debug, Clone)]
pub struct Object {
    pub value: Map<String, Value>,
    pub tier: Tier,
    pub source: Source,
}

#[derive(Debug, Clone)]
pub enum Source {
    /// Document `doc` (0-based) of a manifest file.
    File {
        file: PathBuf,
        doc: usize,
        index: Arc<YamlIndex>,
    },
    /// Made by devloop from a setting (a Secret from an env file).
    Generated(Origin),
}

impl Source {
    /// A diagnostic pointing at `field` (e.g. `spec.replicas`) of this object.
    pub fn diagnostic(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        match self {
            Source::File { file, doc, index } => {
                let position = if field.is_empty() {
                    index.document(*doc)
                } else {
                    index.find(*doc, field)
                };
                Diagnostic::new(file, message).at(position).field(field)
            }
            Source::Generated(origin) => origin.diagnostic(message),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::File { file, doc, .. } => format!("{} (document {})", file.display(), doc + 1),
            Source::Generated(origin) => format!("{} `{}`", origin.file.display(), origin.field),
        }
    }
}

/// What identifies an object in a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The API group ("" for the core group), not the version: v1 and v2 of a kind are one object.
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)?;
        if let Some(ns) = &self.namespace {
            write!(f, " in namespace {ns}")?;
        }
        Ok(())
    }
}

impl Object {
    pub fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.value["metadata"]
            .get("namespace")
            .and_then(Value::as_str)
    }

    pub fn key(&self) -> ObjectKey {
        let group = match self.api_version().split_once('/') {
            Some((group, _)) => group.to_string(),
            None => String::new(),
        };
        ObjectKey {
            group,
            kind: self.kind().to_string(),
            namespace: self.namespace().map(str::to_string),
            name: self.name().to_string(),
        }
    }

    /// `Kind/name`, as users write it.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.kind(), self.name())
    }

    /// `serde_json::Value::pointer_mut` for the object's top-level map.
    pub fn pointer_mut(&mut self, pointer: &str) -> Option<&mut Value> {
        let path = pointer.trim_start_matches('/');
        let (first, rest) = path.split_once('/').unwrap_or((path, ""));
        let value = self.value.get_mut(first)?;
        if rest.is_empty() {
            Some(value)
        } else {
            value.pointer_mut(&format!("/{rest}"))
        }
    }

    pub fn metadata_mut(&mut self) -> &mut Map<String, Value> {
        self.value
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("metadata checked to be a mapping when read")
    }
}

/// Read every manifest source, in order.
pub fn read_all(sources: &[ManifestSource]) -> Result<Vec<Object>, Diagnostic> {
    let mut objects = Vec::new();
    for source in sources {
        for file in manifest_files(&source.path, &source.origin)? {
            read_file(&file, source.tier, &mut objects)?;
        }
    }
    Ok(objects)
}

/// A file, or the `*.yaml`/`*.yml` files of a directory tree in name order (dot-entries skipped).
fn manifest_files(path: &Path, origin: &Origin) -> Result<Vec<PathBuf>, Diagnostic> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    collect(path, &mut files).map_err(|e| {
        origin.diagnostic(format!(
            "failed to read directory {}: {e}",
            shown(path).display()
        ))
    })?;
    files.sort();
    if files.is_empty() {
        return Err(origin
            .diagnostic(format!(
                "directory {} holds no *.yaml or *.yml files",
                shown(path).display()
            ))
            .hint("add manifests there or remove the entry"));
    }
    Ok(files)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(&path, out)?;
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push(path);
        }
    }
    Ok(())
}

fn read_file(path: &Path, tier: Tier, out: &mut Vec<Object>) -> Result<(), Diagnostic> {
    let shown_file = shown(path);
    let text = read_text(path).map_err(|e| Diagnostic::new(&shown_file, format!("{e}")))?;
    let index = Arc::new(YamlIndex::new(&text));
    for (doc, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(de).map_err(|e| {
            let position = e.location().map(|l| crate::config::locate::Position {
                line: l.line(),
                column: l.column(),
            });
            Diagnostic::from_serde(&shown_file, "", position, &e.to_string())
                .hint("this is not valid YAML; check indentation and quoting near that line")
        })?;
        let source = Source::File {
            file: shown_file.clone(),
            doc,
            index: index.clone(),
        };
        let value = match value {
            // `---` with nothing after it, or a file of comments.
            Value::Null => continue,
            Value::Object(map) => map,
            _ => {
                return Err(source.diagnostic("", "a manifest document must be a mapping"));
            }
        };
        check_identity(&value, &source)?;
        out.push(Object {
            value,
            tier,
            source,
        });
    }
    Ok(())
}

fn check_identity(value: &Map<String, Value>, source: &Source) -> Result<(), Diagnostic> {
    for (field, example) in [("apiVersion", "apps/v1"), ("kind", "Deployment")] {
        match value.get(field) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(_) => {
                return Err(source.diagnostic(field, format!("`{field}` must be a string")));
            }
            None => {
                return Err(source
                    .diagnostic("", format!("missing `{field}`"))
                    .field(field)
                    .hint(format!("add e.g. `{field}: {example}`")));
            }
        }
    }
    match value.get("metadata") {
        Some(Value::Object(meta)) => match meta.get("name") {
            Some(Value::String(s)) if !s.is_empty() => Ok(()),
            Some(_) => Err(source.diagnostic("metadata.name", "`metadata.name` must be a string")),
            None if meta.contains_key("generateName") => Err(source
                .diagnostic(
                    "metadata.generateName",
                    "`generateName` cannot be applied repeatably",
                )
                .hint("give the object a fixed `metadata.name`")),
            None => Err(source
                .diagnostic("metadata", "missing `metadata.name`")
                .field("metadata.name")
                .hint("add `name:` under `metadata:`")),
        },
        _ => Err(source
            .diagnostic("", "missing `metadata`")
            .field("metadata")
            .hint("add `metadata:` with a `name:`")),
    }
}

/// Kinds that are not namespaced (the common ones; others are assumed namespaced).
pub fn is_cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "PersistentVolume"
            | "StorageClass"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "CustomResourceDefinition"
            | "PriorityClass"
            | "IngressClass"
            | "RuntimeClass"
            | "CSIDriver"
            | "Node"
            | "APIService"
            | "MutatingWebhookConfiguration"
            | "ValidatingWebhookConfiguration"
    )
}

/// Where the pod spec lives in a workload, as a JSON pointer.
pub fn pod_spec_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some("/spec"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some("/spec/template/spec")
        }
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

/// Where the pod template's metadata lives, as a JSON pointer.
pub fn pod_template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Turn a JSON pointer into the dotted field path used in messages.
pub fn pointer_to_field(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}
