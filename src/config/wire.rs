//! The YAML files as written: `devloop.yaml` and `profiles/<name>.yaml`.
//!
//! These types mirror the files one to one and are strict (`deny_unknown_fields`), so a typo is
//! an error, never silently ignored. They derive the JSON schema committed as
//! `devloop.schema.json`. Nothing here resolves paths or applies profiles; see `config::resolve`.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `devloop.yaml`: one project, its images, manifests, forwards and backups.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "devloop.yaml")]
pub struct ProjectOptions {
    /// Project name: a DNS label (lowercase letters, digits, '-'), used in labels.
    pub name: String,
    /// Namespace for namespaced objects that name none. Default: the kube context's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Which kind of cluster to load images into. Default `auto`: detected from the kube context.
    #[serde(default, skip_serializing_if = "ClusterOption::is_auto")]
    pub cluster: ClusterOption,
    /// A registry (`host[:port][/path]`) to push images to when the cluster is not a local kind
    /// or minikube. When set, images are named `<registry>/<image>:<tag>` everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// Images devloop builds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactOptions>,
    /// Kubernetes manifests, split into the persistent tier and the profile tier.
    #[serde(default)]
    pub manifests: ManifestOptions,
    /// Secrets generated from local .env-style files; part of the persistent tier.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretOptions>,
    /// Local ports forwarded to the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_forward: Vec<PortForwardOptions>,
    /// The database backup CronJob and restore Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupOptions>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterOption {
    /// Detect from the kube context and the node containers.
    #[default]
    Auto,
    Kind,
    Minikube,
    /// Any other cluster (images must then be pushed to a registry).
    Other,
}

impl ClusterOption {
    fn is_auto(&self) -> bool {
        *self == ClusterOption::Auto
    }
}

/// One image built from a Dockerfile.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArtifactOptions {
    /// Image name as the manifests write it in `image:`, without a tag (devloop chooses the tag).
    pub image: String,
    /// Build context directory, relative to the project root.
    #[serde(default = "default_context")]
    pub context: String,
    /// Dockerfile, relative to the context.
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    /// Multi-stage build target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Build arguments (`ARG`s).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub build_args: IndexMap<String, String>,
    /// Files copied into running containers instead of rebuilding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync: Vec<SyncRule>,
}

fn default_context() -> String {
    ".".to_string()
}

fn default_dockerfile() -> String {
    "Dockerfile".to_string()
}

/// Live sync: files matching `src` (a glob relative to the context) are copied under `dest`, and
/// files it covers that are deleted locally are deleted there; then `run` runs, if given.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SyncRule {
    /// A glob relative to the build context, e.g. `www/**` or `app/**/*.py`.
    pub src: String,
    /// The directory in the container that the part of the path below `src`'s fixed directories
    /// goes to: with `src: "www/**"` and `dest: /www`, `www/css/a.css` → `/www/css/a.css`.
    pub dest: String,
    /// A command (program and arguments, no shell) run in each container that received files,
    /// after the copy; once per round even if several rules name the same command. Use
    /// `["sh", "-c", "…"]` for a shell, `["kill", "-HUP", "1"]` to make the server reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub run: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ManifestOptions {
    /// The persistent tier (PVCs, Secrets, backup CronJob): applied once, never deleted.
    #[serde(default)]
    pub infra: Vec<String>,
    /// The profile tier: redeployed by every `up`, removed by `down`.
    #[serde(default)]
    pub app: Vec<String>,
}

/// A Secret whose data comes from a local KEY=VALUE file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretOptions {
    /// The Secret's name.
    pub name: String,
    /// The local file with KEY=VALUE lines. Keep it out of version control.
    pub env_file: String,
    /// A committed example file, named in the error when `envFile` is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortForwardOptions {
    /// `service/NAME`, `deployment/NAME`, `statefulset/NAME` or `pod/NAME`.
    pub resource: String,
    /// The port on the resource: the Service port, or the container port.
    pub port: u16,
    /// The port on 127.0.0.1.
    #[serde(default = "default_local_port")]
    pub local_port: u16,
}

pub const DEFAULT_LOCAL_PORT: u16 = 8000;

fn default_local_port() -> u16 {
    DEFAULT_LOCAL_PORT
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackupOptions {
    /// The backup CronJob (in the infra tier); `devloop backup now` runs its job template.
    pub cron_job: String,
    /// A Job manifest used as the restore template; not applied by `up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_job: Option<String>,
}

/// `profiles/<name>.yaml`: selects extra manifests and patches the rendered objects.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "devloop profile")]
pub struct ProfileOptions {
    /// Overrides devloop.yaml's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Extra profile-tier manifests (files or directories), relative to the project root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<String>,
    /// Build overrides per artifact, keyed by image name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub artifacts: IndexMap<String, ArtifactOverride>,
    /// Changes to rendered objects, applied in order. Each must match exactly one object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<PatchOptions>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArtifactOverride {
    /// Replaces the artifact's build target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Merged over the artifact's build arguments.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub build_args: IndexMap<String, String>,
}

/// A patch for one object, selected by kind and name.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchOptions {
    /// The object's kind, e.g. `Deployment`.
    pub kind: String,
    /// The object's `metadata.name`.
    pub name: String,
    /// Only needed when objects in several namespaces share kind and name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Sets `spec.replicas` (Deployment, StatefulSet, ReplicaSet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Changes to containers or initContainers, keyed by container name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub containers: IndexMap<String, ContainerPatch>,
    /// Any other change, as a JSON merge patch (RFC 7386): maps merge, `null` deletes, lists replace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerPatch {
    /// Replaces the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Replaces the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the args.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Environment variables by name: a string sets or overrides, `null` removes.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, Option<String>>,
    /// Merged into the container's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesPatch>,
    /// Merged into the container's readiness probe (RFC 7386: `null` removes a field, or the
    /// probe), e.g. `{periodSeconds: 1}` for a dev profile that should take traffic sooner.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub readiness_probe: Option<serde_json::Value>,
    /// Merged into the container's liveness probe, as `readinessProbe`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub liveness_probe: Option<serde_json::Value>,
    /// Merged into the container's startup probe, as `readinessProbe`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub startup_probe: Option<serde_json::Value>,
}

/// A field that is present, even as `null` (which plain `Option` would read as absent).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourcesPatch {
    /// e.g. `{cpu: 250m, memory: 256Mi}`
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub requests: IndexMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub limits: IndexMap<String, Quantity>,
}

/// A Kubernetes quantity, written as a string (`250m`, `1Gi`) or a number (`1`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Quantity {
    Text(String),
    Number(f64),
}

impl Quantity {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Quantity::Text(s) => s.clone().into(),
            Quantity::Number(n) if n.fract() == 0.0 => (*n as i64).to_string().into(),
            Quantity::Number(n) => n.to_string().into(),
        }
    }
}
