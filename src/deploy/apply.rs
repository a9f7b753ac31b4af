//! Applying rendered objects to a cluster: the persistent tier once, the profile tier every time,
//! pruning what left the profile, and removing the profile tier on `down`.
//!
//! Everything goes through server-side apply with field manager `devloop`. The persistent tier is
//! created when absent and otherwise only compared: drift is reported, never "fixed", unless the
//! user asks (`--reapply-infra`), and nothing labelled `devloop.dev/tier: persistent` is ever
//! deleted here. Every error says what was applied before it happened.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::manifest::{Object, ObjectKey};
use super::render::{LABEL_PROJECT, LABEL_TIER};
use crate::config::Tier;
use crate::output::Printer;

pub const FIELD_MANAGER: &str = "devloop";
/// On Jobs: a digest of the spec, to tell when a Job must be re-created (its template is immutable).
pub const ANNOTATION_SPEC_HASH: &str = "devloop.dev/spec-hash";

/// Kinds devloop looks for when pruning or removing a profile tier, besides the rendered ones.
const INVENTORY_KINDS: &[(&str, &str)] = &[
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "ServiceAccount"),
    ("v1", "Pod"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "Ingress"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
];

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("failed to apply {object}{}", applied_note(.applied))]
    Apply {
        object: String,
        applied: Vec<String>,
        #[source]
        source: kube::Error,
    },
    #[error("namespace `{0}` does not exist")]
    NamespaceMissing(String),
    #[error("the cluster does not serve {api_version} {kind}")]
    UnknownKind {
        api_version: String,
        kind: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to {action} {object}")]
    Delete {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to list {kind} objects of the profile tier")]
    List {
        kind: String,
        #[source]
        source: kube::Error,
    },
    #[error("Job {0} was not deleted within 60s, so it cannot be re-created")]
    JobStuck(String),
}

fn applied_note(applied: &[String]) -> String {
    match applied.len() {
        0 => " (nothing was applied before it)".to_string(),
        n if n <= 6 => format!(" (already applied: {})", applied.join(", ")),
        n => format!(
            " (already applied {n} objects: {}, …)",
            applied[..6].join(", ")
        ),
    }
}

impl ApplyError {
    pub fn hint(&self) -> Option<String> {
        let source = match self {
            ApplyError::NamespaceMissing(ns) => {
                return Some(format!(
                    "create it (`kubectl create namespace {ns}`), add a Namespace manifest, or pick another with `-n`"
                ));
            }
            ApplyError::JobStuck(_) => {
                return Some("check its finalizers: `kubectl get job -o yaml`".into());
            }
            ApplyError::Apply { source, .. }
            | ApplyError::Delete { source, .. }
            | ApplyError::List { source, .. } => source,
            ApplyError::UnknownKind { .. } => {
                return Some(
                    "install the CRD that defines it first, or remove the manifest".into(),
                );
            }
        };
        match source {
            kube::Error::Api(s) if s.code == 403 => Some(format!(
                "your kube user may not do this ({}); ask for the permission or use another context",
                s.message
            )),
            kube::Error::Api(s) if s.code == 422 || s.code == 400 => Some(format!("the API server rejected it: {}", s.message)),
            kube::Error::Api(_) => None,
            _ => Some("the API server stopped answering; check the cluster (`devloop doctor`) and run again — applying is repeatable".into()),
        }
    }
}

/// What applying a tier did.
#[derive(Debug, Default)]
pub struct TierReport {
    pub created: Vec<String>,
    pub configured: Vec<String>,
    /// Persistent objects left as they are (with their drift, if any).
    pub kept: Vec<String>,
    pub drift: Vec<String>,
    pub recreated: Vec<String>,
    pub pruned: Vec<String>,
    /// Profile objects whose rendering is what this run last applied: not sent again.
    pub unchanged: Vec<String>,
}

/// Applies objects, caching API discovery per kind.
pub struct Applier {
    client: kube::Client,
    default_namespace: String,
    resources: HashMap<(String, String), (ApiResource, ApiCapabilities)>,
    /// Everything applied so far in this run, for error messages.
    applied: Vec<String>,
    /// What this run last applied to each profile-tier object, as a digest of the rendering. A
    /// rebuild changes one workload's image: the Services, ConfigMaps and other workloads around
    /// it are not sent again, which takes their round trips off the inner loop. Someone else's
    /// change to such an object stays until its rendering changes or `up` starts again, as with
    /// any tool that applies only what changed.
    sent: HashMap<ObjectKey, String>,
}

impl Applier {
    pub fn new(client: kube::Client, default_namespace: String) -> Self {
        Self {
            client,
            default_namespace,
            resources: HashMap::new(),
            applied: Vec::new(),
            sent: HashMap::new(),
        }
    }

    pub fn namespace_of(&self, object: &Object) -> Option<String> {
        object
            .namespace()
            .map(str::to_string)
            .or_else(|| Some(self.default_namespace.clone()))
    }

    async fn resource(
        &mut self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, ApiCapabilities), ApplyError> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(found) = self.resources.get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let found = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|source| ApplyError::UnknownKind {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
                source,
            })?;
        self.resources.insert(key, found.clone());
        Ok(found)
    }

    async fn api(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Api<DynamicObject>, ApplyError> {
        let (resource, caps) = self.resource(api_version, kind).await?;
        Ok(match (caps.scope, namespace) {
            (Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(self.client.clone(), ns, &resource)
            }
            (Scope::Namespaced, None) => {
                Api::namespaced_with(self.client.clone(), &self.default_namespace, &resource)
            }
            (Scope::Cluster, _) => Api::all_with(self.client.clone(), &resource),
        })
    }

    /// Fail early, and clearly, when an object's namespace does not exist.
    pub async fn check_namespaces(&mut self, objects: &[Object]) -> Result<(), ApplyError> {
        let declared: HashSet<&str> = objects
            .iter()
            .filter(|o| o.kind() == "Namespace")
            .map(Object::name)
            .collect();
        let mut needed: Vec<String> = objects
            .iter()
            .filter(|o| !super::manifest::is_cluster_scoped(o.kind()))
            .filter_map(|o| self.namespace_of(o))
            .filter(|ns| !declared.contains(ns.as_str()))
            .collect();
        needed.sort();
        needed.dedup();
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        for ns in needed {
            match api.get_opt(&ns).await {
                Ok(Some(_)) => {}
                Ok(None) => return Err(ApplyError::NamespaceMissing(ns)),
                // Not allowed to read namespaces is fine; the apply itself will say more.
                Err(kube::Error::Api(s)) if s.code == 403 => {}
                Err(source) => {
                    return Err(ApplyError::Apply {
                        object: format!("Namespace/{ns}"),
                        applied: self.applied.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// The persistent tier: create what is absent; report drift on what exists; with `reapply`,
    /// apply it all (still never deleting).
    pub async fn apply_persistent(
        &mut self,
        objects: &[Object],
        reapply: bool,
        printer: &Printer,
    ) -> Result<TierReport, ApplyError> {
        let mut report = TierReport::default();
        for object in objects.iter().filter(|o| o.tier == Tier::Persistent) {
            let name = object.display_name();
            let ns = self.namespace_of(object);
            let api = self
                .api(object.api_version(), object.kind(), ns.as_deref())
                .await?;
            let live = api
                .get_opt(object.name())
                .await
                .map_err(|source| self.apply_error(&name, source))?;
            match live {
                None => {
                    self.server_side_apply(&api, object).await?;
                    report.created.push(name);
                }
                Some(live) if reapply => {
                    let before = drift(
                        &object.value,
                        &serde_json::to_value(&live).unwrap_or_default(),
                    );
                    self.server_side_apply(&api, object).await?;
                    if before.is_empty() {
                        report.kept.push(name)
                    } else {
                        report.configured.push(name)
                    }
                }
                Some(live) => {
                    for line in drift(
                        &object.value,
                        &serde_json::to_value(&live).unwrap_or_default(),
                    ) {
                        report.drift.push(format!("{name}: {line}"));
                    }
                    report.kept.push(name);
                }
            }
        }
        for line in &report.drift {
            printer.warn(&format!(
                "persistent tier drift (left as it is; `--reapply-infra` applies the files): {line}"
            ));
        }
        Ok(report)
    }

    /// The profile tier: apply everything in order; re-create Jobs whose spec changed.
    pub async fn apply_profile(
        &mut self,
        objects: &[Object],
        printer: &Printer,
    ) -> Result<TierReport, ApplyError> {
        let mut report = TierReport::default();
        let autoscaled: HashSet<(String, String)> = objects
            .iter()
            .filter(|o| o.kind() == "HorizontalPodAutoscaler")
            .filter_map(|o| {
                let target = o.value.get("spec")?.get("scaleTargetRef")?;
                Some((
                    target.get("kind")?.as_str()?.to_string(),
                    target.get("name")?.as_str()?.to_string(),
                ))
            })
            .collect();
        for object in objects.iter().filter(|o| o.tier == Tier::Profile) {
            let name = object.display_name();
            let key = applied_key(object, &self.default_namespace);
            let digest = content_digest(object);
            if self.sent.get(&key) == Some(&digest) {
                report.unchanged.push(name);
                continue;
            }
            // Forgotten until it is applied again: a failure half-way must not leave it "sent".
            self.sent.remove(&key);
            let ns = self.namespace_of(object);
            let api = self
                .api(object.api_version(), object.kind(), ns.as_deref())
                .await?;
            let mut object = object.clone();
            let live = api
                .get_opt(object.name())
                .await
                .map_err(|source| self.apply_error(&name, source))?;
            if object.kind() == "Job" {
                let hash = spec_hash(&object);
                object
                    .metadata_mut()
                    .entry("annotations")
                    .or_insert_with(|| serde_json::json!({}))
                    .as_object_mut()
                    .map(|a| a.insert(ANNOTATION_SPEC_HASH.into(), hash.clone().into()));
                let live_hash = live.as_ref().and_then(|l| {
                    l.metadata
                        .annotations
                        .as_ref()?
                        .get(ANNOTATION_SPEC_HASH)
                        .cloned()
                });
                if live.is_some() && live_hash.as_deref() != Some(hash.as_str()) {
                    printer.info(&format!("{name}: its template changed; re-creating it"));
                    self.delete_and_wait(&api, &name, object.name()).await?;
                    self.server_side_apply(&api, &object).await?;
                    self.sent.insert(key, digest);
                    report.recreated.push(name);
                    continue;
                }
            }
            // With an autoscaler on it, the replica count is the autoscaler's to set.
            if live.is_some()
                && autoscaled.contains(&(object.kind().to_string(), object.name().to_string()))
                && let Some(spec) = object.value.get_mut("spec").and_then(Value::as_object_mut)
            {
                spec.remove("replicas");
            }
            self.server_side_apply(&api, &object).await?;
            self.sent.insert(key, digest);
            if live.is_some() {
                report.configured.push(name)
            } else {
                report.created.push(name)
            }
        }
        Ok(report)
    }

    /// Delete profile-tier objects of `project` that are not in `keep` (objects that left the
    /// manifests, or belong to another profile).
    pub async fn prune(
        &mut self,
        project: &str,
        objects: &[Object],
        keep: &HashSet<ObjectKey>,
    ) -> Result<Vec<String>, ApplyError> {
        let mut pruned = Vec::new();
        for live in self.inventory(project, Tier::Profile, objects).await? {
            let key = ObjectKey {
                group: live.group.clone(),
                kind: live.kind.clone(),
                namespace: live.namespace.clone(),
                name: live.name.clone(),
            };
            // Keys of rendered objects carry the namespace they will be applied to.
            if keep.contains(&key) {
                continue;
            }
            self.sent.remove(&key);
            self.delete_live(&live).await?;
            pruned.push(live.display());
        }
        Ok(pruned)
    }

    /// Delete the whole profile tier of `project` (`down`, Ctrl+C).
    pub async fn delete_profile_tier(
        &mut self,
        project: &str,
        objects: &[Object],
    ) -> Result<Vec<String>, ApplyError> {
        self.prune(project, objects, &HashSet::new()).await
    }

    /// Delete the persistent tier of `project`: only `down --all`, after confirmation, calls this.
    pub async fn delete_persistent_tier(
        &mut self,
        project: &str,
        objects: &[Object],
    ) -> Result<Vec<String>, ApplyError> {
        let mut deleted = Vec::new();
        for live in self.inventory(project, Tier::Persistent, objects).await? {
            self.delete_live(&live).await?;
            deleted.push(live.display());
        }
        Ok(deleted)
    }

    /// Objects of one tier of `project` in the cluster, found by label.
    pub async fn inventory(
        &mut self,
        project: &str,
        tier: Tier,
        objects: &[Object],
    ) -> Result<Vec<LiveObject>, ApplyError> {
        let mut kinds: Vec<(String, String)> = INVENTORY_KINDS
            .iter()
            .map(|(a, k)| (a.to_string(), k.to_string()))
            .collect();
        for o in objects {
            let kind = (o.api_version().to_string(), o.kind().to_string());
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        let selector = format!("{LABEL_PROJECT}={project},{LABEL_TIER}={}", tier.label());
        let mut namespaces: Vec<String> = objects
            .iter()
            .filter_map(|o| o.namespace().map(str::to_string))
            .collect();
        namespaces.push(self.default_namespace.clone());
        namespaces.sort();
        namespaces.dedup();
        let mut found = Vec::new();
        for (api_version, kind) in kinds {
            let Ok((resource, caps)) = self.resource(&api_version, &kind).await else {
                continue; // not served by this cluster: nothing of that kind to find
            };
            // Only the namespaces this run works in: the same project may be deployed in
            // another namespace by someone else, and that is not ours to touch.
            let apis: Vec<Api<DynamicObject>> = match caps.scope {
                Scope::Cluster => vec![Api::all_with(self.client.clone(), &resource)],
                Scope::Namespaced => namespaces
                    .iter()
                    .map(|ns| Api::namespaced_with(self.client.clone(), ns, &resource))
                    .collect(),
            };
            let mut items = Vec::new();
            for api in apis {
                let listed = api
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|source| ApplyError::List {
                        kind: kind.clone(),
                        source,
                    })?;
                items.extend(listed.items);
            }
            for item in items {
                let labels = item.metadata.labels.clone().unwrap_or_default();
                // Belt and braces: the tier label must say what was asked, whatever the selector did.
                if labels.get(LABEL_TIER).map(String::as_str) != Some(tier.label()) {
                    continue;
                }
                // Pods owned by a workload go with it; only bare Pods are ours to delete.
                if kind == "Pod"
                    && item
                        .metadata
                        .owner_references
                        .as_ref()
                        .is_some_and(|o| !o.is_empty())
                {
                    continue;
                }
                let profile = labels.get(super::render::LABEL_PROFILE).cloned();
                found.push(LiveObject {
                    profile,
                    group: resource.group.clone(),
                    api_version: api_version.clone(),
                    kind: kind.clone(),
                    namespace: item.metadata.namespace.clone(),
                    name: item.metadata.name.clone().unwrap_or_default(),
                });
            }
        }
        Ok(found)
    }

    async fn delete_live(&mut self, live: &LiveObject) -> Result<(), ApplyError> {
        let api = self
            .api(&live.api_version, &live.kind, live.namespace.as_deref())
            .await?;
        match api.delete(&live.name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(source) => Err(ApplyError::Delete {
                action: "delete",
                object: live.display(),
                source,
            }),
        }
    }

    async fn delete_and_wait(
        &mut self,
        api: &Api<DynamicObject>,
        display: &str,
        name: &str,
    ) -> Result<(), ApplyError> {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(source) => {
                return Err(ApplyError::Delete {
                    action: "delete",
                    object: display.to_string(),
                    source,
                });
            }
        }
        for _ in 0..120 {
            match api.get_opt(name).await {
                Ok(None) => return Ok(()),
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(source) => {
                    return Err(ApplyError::Delete {
                        action: "wait for the deletion of",
                        object: display.to_string(),
                        source,
                    });
                }
            }
        }
        Err(ApplyError::JobStuck(display.to_string()))
    }

    async fn server_side_apply(
        &mut self,
        api: &Api<DynamicObject>,
        object: &Object,
    ) -> Result<(), ApplyError> {
        let name = object.display_name();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut value = Value::Object(object.value.clone());
        if api.namespace().is_some()
            && object.namespace().is_none()
            && !super::manifest::is_cluster_scoped(object.kind())
        {
            value["metadata"]["namespace"] = self.default_namespace.clone().into();
        }
        api.patch(object.name(), &params, &Patch::Apply(&value))
            .await
            .map_err(|source| self.apply_error(&name, source))?;
        self.applied.push(name);
        Ok(())
    }

    fn apply_error(&self, object: &str, source: kube::Error) -> ApplyError {
        match &source {
            kube::Error::Api(s) if s.code == 404 && s.message.contains("namespaces") => {
                let ns = s.message.split('"').nth(1).unwrap_or_default().to_string();
                ApplyError::NamespaceMissing(ns)
            }
            _ => ApplyError::Apply {
                object: object.to_string(),
                applied: self.applied.clone(),
                source,
            },
        }
    }

    /// Objects applied so far in this run.
    pub fn applied(&self) -> &[String] {
        &self.applied
    }
}

/// An object found in the cluster by label.
#[derive(Debug, Clone)]
pub struct LiveObject {
    /// The `devloop.dev/profile` label (profile tier only).
    pub profile: Option<String>,
    pub group: String,
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl LiveObject {
    pub fn display(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// A rendered object's key with the namespace it is applied to filled in.
pub fn applied_key(object: &Object, default_namespace: &str) -> ObjectKey {
    let mut key = object.key();
    if key.namespace.is_none() && !super::manifest::is_cluster_scoped(object.kind()) {
        key.namespace = Some(default_namespace.to_string());
    }
    key
}

/// The whole rendering, for [`Applier::apply_profile`] to tell what changed since it last applied.
fn content_digest(object: &Object) -> String {
    format!(
        "{:x}",
        Sha256::digest(serde_json::to_vec(&object.value).unwrap_or_default())
    )
}

fn spec_hash(object: &Object) -> String {
    let spec = object
        .value
        .get("spec")
        .map(Value::to_string)
        .unwrap_or_default();
    format!("{:x}", Sha256::digest(spec.as_bytes()))[..16].to_string()
}

/// Fields the file sets that the cluster has differently, as "path: file X, cluster Y".
/// Secret values are compared but never shown.
pub fn drift(desired: &serde_json::Map<String, Value>, live: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let is_secret = desired.get("kind").and_then(Value::as_str) == Some("Secret");
    for (key, value) in desired {
        match key.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "stringData" if is_secret => {
                let data = live.get("data").and_then(Value::as_object);
                for (k, v) in value.as_object().into_iter().flatten() {
                    let live_value = data
                        .and_then(|d| d.get(k))
                        .and_then(Value::as_str)
                        .and_then(decode_base64);
                    if live_value.as_deref() != v.as_str() {
                        out.push(format!("stringData.{k}: differs (values not shown)"));
                    }
                }
            }
            _ => compare(key, value, live.get(key), &mut out),
        }
    }
    out
}

fn compare(path: &str, desired: &Value, live: Option<&Value>, out: &mut Vec<String>) {
    match (desired, live) {
        (Value::Object(d), Some(Value::Object(l))) => {
            for (k, v) in d {
                compare(&format!("{path}.{k}"), v, l.get(k), out);
            }
        }
        (Value::Array(d), Some(Value::Array(l))) if d.len() == l.len() => {
            for (i, (dv, lv)) in d.iter().zip(l).enumerate() {
                compare(&format!("{path}[{i}]"), dv, Some(lv), out);
            }
        }
        (Value::Null, _) => {}
        (d, Some(l)) if same_scalar(d, l) => {}
        (d, l) => out.push(format!(
            "{path}: file {}, cluster {}",
            short(d),
            l.map(short).unwrap_or_else(|| "(unset)".into())
        )),
    }
}

/// Quantities and numbers come back normalised as strings or numbers; compare loosely.
fn same_scalar(a: &Value, b: &Value) -> bool {
    a == b || scalar_text(a) == scalar_text(b)
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 60 {
        format!("{}…", &text[..60])
    } else {
        text
    }
}

fn decode_base64(s: &str) -> Option<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drift_names_changed_fields_and_hides_secret_values() {
        let desired = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "labels": {"a": "1"}}, "stringData": {"PASSWORD": "new", "USER": "app"}});
        let live = json!({"metadata": {"name": "db", "labels": {"a": "1"}, "uid": "x"}, "data": {"PASSWORD": "b2xk", "USER": "YXBw"}});
        let lines = drift(desired.as_object().unwrap(), &live);
        assert_eq!(
            lines,
            vec!["stringData.PASSWORD: differs (values not shown)"]
        );

        let desired = json!({"kind": "PersistentVolumeClaim", "spec": {"resources": {"requests": {"storage": "2Gi"}}}});
        let live =
            json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}, "volumeName": "pv-1"}});
        assert_eq!(
            drift(desired.as_object().unwrap(), &live),
            vec![r#"spec.resources.requests.storage: file "2Gi", cluster "1Gi""#]
        );
    }

    #[test]
    fn decodes_base64() {
        assert_eq!(decode_base64("YXBw").as_deref(), Some("app"));
        assert_eq!(decode_base64("cGFzc3dvcmQ=").as_deref(), Some("password"));
    }
}

/// Error paths a real API server will not produce on demand: a permission denial and a server
/// that goes away half-way. A scripted mock stands in for the server (`tower_test`).
#[cfg(test)]
mod mock_tests {
    use super::*;
    use crate::deploy::manifest::Source;
    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use std::sync::Arc;

    fn object(kind: &str, api_version: &str, name: &str) -> Object {
        let value = serde_json::json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
        Object {
            value: value.as_object().cloned().unwrap(),
            tier: Tier::Profile,
            source: Source::File {
                file: "k8s/x.yaml".into(),
                doc: 0,
                index: Arc::default(),
            },
        }
    }

    fn json(status: StatusCode, body: serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(status)
            .body(Body::from(body.to_string().into_bytes()))
            .unwrap()
    }

    fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
        json(
            StatusCode::from_u16(code).unwrap(),
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message}),
        )
    }

    /// Answers discovery for ConfigMaps, says every object is absent, and lets `patch` decide
    /// how the n-th apply goes.
    fn server(patch: fn(usize) -> Option<Response<Body>>) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(async move {
            let mut applies = 0;
            while let Some((request, send)) = handle.next_request().await {
                let path = request.uri().path().to_string();
                let response = match (request.method().as_str(), path.as_str()) {
                    ("GET", "/api/v1") => json(
                        StatusCode::OK,
                        serde_json::json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                            {"name": "configmaps", "singularName": "configmap", "namespaced": true, "kind": "ConfigMap", "verbs": ["get", "list", "patch", "delete"]}
                        ]}),
                    ),
                    ("GET", _) => status(404, "NotFound", "not found"),
                    ("PATCH", _) => {
                        applies += 1;
                        match patch(applies) {
                            Some(r) => r,
                            None => {
                                send.send_error(std::io::Error::new(
                                    std::io::ErrorKind::ConnectionReset,
                                    "connection reset by peer",
                                ));
                                continue;
                            }
                        }
                    }
                    _ => status(405, "MethodNotAllowed", "unexpected"),
                };
                send.send_response(response);
            }
        });
        kube::Client::new(service, "default")
    }

    #[tokio::test]
    async fn a_permission_denial_names_the_object_and_the_fix() {
        let client = server(|_| {
            Some(status(
                403,
                "Forbidden",
                "configmaps \"a\" is forbidden: User \"dev\" cannot patch resource",
            ))
        });
        let mut applier = Applier::new(client, "default".into());
        let printer = Printer::new(true, 0, crate::cli::ColorChoice::Never);
        let err = applier
            .apply_profile(&[object("ConfigMap", "v1", "a")], &printer)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("failed to apply ConfigMap/a (nothing was applied before it)"),
            "{err}"
        );
        let hint = err.hint().unwrap();
        assert!(
            hint.contains("may not do this") && hint.contains("cannot patch"),
            "{hint}"
        );
    }

    #[tokio::test]
    async fn a_server_gone_half_way_says_what_was_applied() {
        // The first apply succeeds; then the connection drops.
        let client = server(|n| {
            (n == 1).then(|| json(StatusCode::OK, serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})))
        });
        let mut applier = Applier::new(client, "default".into());
        let printer = Printer::new(true, 0, crate::cli::ColorChoice::Never);
        let objects = [
            object("ConfigMap", "v1", "a"),
            object("ConfigMap", "v1", "b"),
        ];
        let err = applier.apply_profile(&objects, &printer).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to apply ConfigMap/b (already applied: ConfigMap/a)"
        );
        assert!(
            err.hint().unwrap().contains("stopped answering"),
            "{:?}",
            err.hint()
        );
    }
}
