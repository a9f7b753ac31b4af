//! Rendering: the fully resolved objects of a project and profile, in apply order.
//!
//! The steps and their order are documented in docs/configuration.md ("How a profile applies")
//! and must stay in step with it: read manifests → patch → generate Secrets → default the
//! namespace → substitute images → label → reject duplicates → validate → sort.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

use super::manifest::{self, Object, is_cluster_scoped, pod_spec_pointer, pod_template_pointer};
use super::{patch, secrets, validate};
use crate::config::{Project, Tier, split_image};
use crate::diagnostic::Diagnostic;

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_PROJECT: &str = "devloop.dev/project";
pub const LABEL_PROFILE: &str = "devloop.dev/profile";
pub const LABEL_TIER: &str = "devloop.dev/tier";

/// What rendering needs besides the project.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Artifact image name → the reference to deploy (e.g. `web` → `web:dl-3f2a91c04b7e`).
    pub images: HashMap<String, String>,
}

#[derive(Debug)]
pub struct Rendered {
    /// In apply order.
    pub objects: Vec<Object>,
    /// Things worth saying that are not errors (e.g. kinds that could not be validated).
    pub warnings: Vec<String>,
}

pub fn render(project: &Project, options: &RenderOptions) -> Result<Rendered, Diagnostic> {
    let mut objects = manifest::read_all(&project.manifests)?;
    patch::apply_all(&mut objects, &project.profile.patches)?;
    for secret in &project.secrets {
        objects.push(secrets::generate(secret)?);
    }
    if let Some(namespace) = &project.namespace {
        for object in objects.iter_mut() {
            if !is_cluster_scoped(object.kind()) && object.namespace().is_none() {
                object
                    .metadata_mut()
                    .insert("namespace".into(), namespace.clone().into());
            }
        }
    }

    let mut used: HashMap<&str, usize> = HashMap::new();
    for object in objects.iter_mut() {
        for artifact in &project.artifacts {
            let Some(reference) = options.images.get(&artifact.image) else {
                continue;
            };
            let n = substitute_image(object, &artifact.image, reference);
            *used.entry(artifact.image.as_str()).or_default() += n;
        }
        add_labels(object, project);
    }

    reject_duplicates(&objects)?;

    let mut warnings = Vec::new();
    for object in &objects {
        if let validate::Checked::Unknown = validate::validate(object)? {
            warnings.push(format!(
                "{} ({}) is not a kind devloop knows; it was not validated",
                object.display_name(),
                object.api_version()
            ));
        }
    }

    for artifact in &project.artifacts {
        if used.get(artifact.image.as_str()).copied().unwrap_or(0) == 0 {
            return Err(artifact
                .origin
                .diagnostic(format!(
                    "artifact `{}` is not used by any manifest of profile `{}`",
                    artifact.image, project.profile.name
                ))
                .hint(format!(
                    "reference it as `image: {}` in a container, or remove the artifact",
                    artifact.image
                )));
        }
    }

    if let Some(backup) = &project.backup {
        let found = objects.iter().any(|o| {
            o.kind() == "CronJob" && o.name() == backup.cron_job && o.tier == Tier::Persistent
        });
        if !found {
            return Err(backup
                .origin
                .diagnostic(format!(
                    "backup CronJob `{}` is not in the infra manifests",
                    backup.cron_job
                ))
                .hint("add the CronJob to a file under `manifests.infra`, or fix the name"));
        }
    }

    // Stable: within a group, infra first, then the order the files were read.
    let mut indexed: Vec<(usize, Object)> = objects.into_iter().enumerate().collect();
    indexed.sort_by_key(|(i, o)| (apply_group(o.kind()), o.tier, *i));
    Ok(Rendered {
        objects: indexed.into_iter().map(|(_, o)| o).collect(),
        warnings,
    })
}

/// The documented apply order: what others depend on goes first.
pub fn apply_group(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        "ServiceAccount" | "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => 2,
        "ConfigMap" => 3,
        "Secret" => 4,
        "StorageClass" | "PersistentVolume" | "PersistentVolumeClaim" => 5,
        "Service" => 6,
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Pod" => 7,
        "HorizontalPodAutoscaler" | "PodDisruptionBudget" | "Ingress" | "NetworkPolicy" => 8,
        "Job" => 9,
        "CronJob" => 10,
        _ => 11,
    }
}

/// Point every container using `image` at `reference`; returns how many it changed.
fn substitute_image(object: &mut Object, image: &str, reference: &str) -> usize {
    let Some(pointer) = pod_spec_pointer(object.kind()) else {
        return 0;
    };
    let Some(spec) = object.pointer_mut(pointer).and_then(Value::as_object_mut) else {
        return 0;
    };
    let mut changed = 0;
    for list in ["initContainers", "containers"] {
        let Some(Value::Array(containers)) = spec.get_mut(list) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let uses = container
                .get("image")
                .and_then(Value::as_str)
                .is_some_and(|current| split_image(current).0 == image);
            if uses {
                container.insert("image".into(), reference.into());
                // The tag is content-addressed: present on the node means current.
                container.insert("imagePullPolicy".into(), "IfNotPresent".into());
                changed += 1;
            }
        }
    }
    changed
}

fn add_labels(object: &mut Object, project: &Project) {
    let mut labels = vec![
        (LABEL_MANAGED_BY, "devloop".to_string()),
        (LABEL_PROJECT, project.name.clone()),
        (LABEL_TIER, object.tier.label().to_string()),
    ];
    // The persistent tier is shared by all profiles, so it carries none.
    if object.tier == Tier::Profile {
        labels.push((LABEL_PROFILE, project.profile.name.clone()));
    }
    let insert = |meta: &mut Map<String, Value>| {
        let map = meta.entry("labels").or_insert_with(|| json!({}));
        if !map.is_object() {
            *map = json!({});
        }
        let map = map.as_object_mut().expect("just made an object");
        for (k, v) in &labels {
            map.insert((*k).to_string(), v.clone().into());
        }
    };
    insert(object.metadata_mut());
    // Pods carry the labels too, so logs and forwards can find this project's pods.
    if let Some(pointer) = pod_template_pointer(object.kind())
        && let Some(template) = object.pointer_mut(pointer).and_then(Value::as_object_mut)
    {
        let meta = template.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            insert(meta);
        }
    }
}

fn reject_duplicates(objects: &[Object]) -> Result<(), Diagnostic> {
    let mut seen: BTreeMap<manifest::ObjectKey, &Object> = BTreeMap::new();
    for object in objects {
        if let Some(first) = seen.insert(object.key(), object) {
            return Err(object
                .source
                .diagnostic(
                    "metadata.name",
                    format!("{} is defined twice", object.key()),
                )
                .hint(format!(
                    "the first is in {}; remove one, or rename it",
                    first.source.describe()
                )));
        }
    }
    Ok(())
}

/// Options for printing rendered objects.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrintOptions {
    pub show_secrets: bool,
}

/// The objects as plain values, Secrets masked unless asked otherwise.
pub fn printable(rendered: &Rendered, print: PrintOptions) -> Vec<Value> {
    rendered
        .objects
        .iter()
        .map(|o| {
            let mut value = o.value.clone();
            if !print.show_secrets {
                secrets::mask(&mut value);
            }
            Value::Object(value)
        })
        .collect()
}

/// Multi-document YAML, with a header saying what was rendered.
pub fn to_yaml(project: &Project, rendered: &Rendered, print: PrintOptions) -> String {
    let profile = match &project.profile.file {
        Some(file) => format!(
            "{} ({})",
            project.profile.name,
            crate::config::shown(file).display()
        ),
        None => format!("{} (no profile file: no patches)", project.profile.name),
    };
    let namespace = project
        .namespace
        .as_deref()
        .unwrap_or("(the kube context's namespace)");
    let mut out = format!(
        "# devloop render: project {}, profile {profile}, namespace {namespace}\n# {} objects in apply order{}\n",
        project.name,
        rendered.objects.len(),
        if print.show_secrets {
            "; Secret values SHOWN"
        } else {
            "; Secret values masked (--show-secrets shows them)"
        }
    );
    for value in printable(rendered, print) {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&value).expect("JSON values serialize as YAML"));
    }
    out
}
