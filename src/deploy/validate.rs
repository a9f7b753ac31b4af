//! Checking objects against the Kubernetes API types before they reach a cluster.
//!
//! Each object of a known kind is deserialized into its k8s-openapi type and serialized back.
//! A wrong type fails the first step; a misspelt or misplaced field is silently dropped by it,
//! so any field present in the input but absent from the round trip is reported, with the
//! field names that *are* allowed there (from the type's JSON schema) for a "did you mean".
//! Kinds devloop does not know (custom resources) pass unchecked, with a warning.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::manifest::Object;
use crate::diagnostic::{Diagnostic, suggest};

type RoundTrip = fn(&Value) -> Result<Value, (String, String)>;
type SchemaOf = fn() -> Value;

struct Known {
    api_version: &'static str,
    kind: &'static str,
    round_trip: RoundTrip,
    schema: SchemaOf,
}

macro_rules! known {
    ($($t:ty),* $(,)?) => {
        &[$(Known {
            api_version: <$t as k8s_openapi::Resource>::API_VERSION,
            kind: <$t as k8s_openapi::Resource>::KIND,
            round_trip: round_trip::<$t>,
            schema: schema_of::<$t>,
        }),*]
    };
}

const KNOWN: &[Known] = {
    use k8s_openapi::api::{
        apps, autoscaling, batch, core, networking, policy, rbac, scheduling, storage,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    known![
        core::v1::Namespace,
        core::v1::ConfigMap,
        core::v1::Secret,
        core::v1::Service,
        core::v1::ServiceAccount,
        core::v1::PersistentVolume,
        core::v1::PersistentVolumeClaim,
        core::v1::Pod,
        core::v1::LimitRange,
        core::v1::ResourceQuota,
        apps::v1::Deployment,
        apps::v1::StatefulSet,
        apps::v1::DaemonSet,
        apps::v1::ReplicaSet,
        batch::v1::Job,
        batch::v1::CronJob,
        autoscaling::v2::HorizontalPodAutoscaler,
        policy::v1::PodDisruptionBudget,
        networking::v1::Ingress,
        networking::v1::IngressClass,
        networking::v1::NetworkPolicy,
        rbac::v1::Role,
        rbac::v1::RoleBinding,
        rbac::v1::ClusterRole,
        rbac::v1::ClusterRoleBinding,
        storage::v1::StorageClass,
        scheduling::v1::PriorityClass,
        CustomResourceDefinition,
    ]
};

fn round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> Result<Value, (String, String)> {
    let typed: T = serde_path_to_error::deserialize(value.clone())
        .map_err(|e| (e.path().to_string(), e.into_inner().to_string()))?;
    serde_json::to_value(typed).map_err(|e| (String::new(), e.to_string()))
}

fn schema_of<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null)
}

/// The outcome for one object.
pub enum Checked {
    Valid,
    /// Not a kind devloop knows; passed through unchecked.
    Unknown,
}

/// Validate one object. The error points at the offending field in the object's source.
pub fn validate(object: &Object) -> Result<Checked, Diagnostic> {
    let api_version = object.api_version();
    let kind = object.kind();
    let Some(known) = KNOWN
        .iter()
        .find(|k| k.kind == kind && k.api_version == api_version)
    else {
        if let Some(k) = KNOWN.iter().find(|k| k.kind == kind) {
            return Err(object
                .source
                .diagnostic(
                    "apiVersion",
                    format!("{kind} is not served as `{api_version}`"),
                )
                .hint(format!("use `apiVersion: {}`", k.api_version)));
        }
        let kinds = KNOWN.iter().map(|k| k.kind);
        if let Some(best) = suggest(kind, kinds).filter(|best| *best != kind) {
            return Err(object
                .source
                .diagnostic("kind", format!("unknown kind `{kind}`"))
                .hint(format!("did you mean `{best}`?")));
        }
        return Ok(Checked::Unknown);
    };
    let input = Value::Object(object.value.clone());
    let output = (known.round_trip)(&input).map_err(|(path, message)| {
        let path = if path == "." { String::new() } else { path };
        object
            .source
            .diagnostic(&path, format!("{}: {message}", object.display_name()))
    })?;
    if let Some(dropped) = first_dropped(&input, &output, String::new()) {
        let (parent, key) = match dropped.rfind('.') {
            Some(i) => (&dropped[..i], &dropped[i + 1..]),
            None => ("", dropped.as_str()),
        };
        let allowed = allowed_fields(&(known.schema)(), parent);
        let hint = match suggest(key, allowed.iter().map(String::as_str)) {
            Some(best) => format!("did you mean `{best}`?"),
            None if allowed.is_empty() => "remove it".to_string(),
            None => format!("fields allowed here: {}", allowed.join(", ")),
        };
        return Err(object
            .source
            .diagnostic(
                &dropped,
                format!(
                    "{}: unknown field `{key}` for {} {kind}",
                    object.display_name(),
                    api_version
                ),
            )
            .hint(hint));
    }
    Ok(Checked::Valid)
}

/// The first path (dotted, `[i]` for items) present in `input` but missing from `output`.
fn first_dropped(input: &Value, output: &Value, path: String) -> Option<String> {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, v)| {
            let child = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match b.get(k) {
                // `field: null` means "unset"; the round trip rightly drops it.
                None if v.is_null() => None,
                None => Some(child),
                Some(w) => first_dropped(v, w, child),
            }
        }),
        (Value::Array(a), Value::Array(b)) => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| first_dropped(v, w, format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Field names the schema allows at a dotted `path` (array indices are stepped through).
fn allowed_fields(schema: &Value, path: &str) -> Vec<String> {
    let defs = schema.get("$defs").unwrap_or(&Value::Null);
    let resolve = |node: &Value| resolve_ref(defs, node).clone();
    let mut node = resolve(schema);
    let segments = path.split('.').filter(|s| !s.is_empty()).flat_map(|s| {
        // `containers[0]` steps into `containers`, then into its items.
        let mut parts = vec![s.split('[').next().unwrap_or(s).to_string()];
        parts.extend(s.matches('[').map(|_| "[]".to_string()));
        parts
    });
    for segment in segments {
        let next = if segment == "[]" {
            node.get("items")
        } else {
            node.get("properties").and_then(|p| p.get(&segment))
        };
        match next {
            Some(n) => node = resolve(n),
            None => return Vec::new(),
        }
    }
    node.get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// Follow `$ref`s (bounded, in case of cycles) to the node with the properties.
fn resolve_ref<'a>(defs: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(next) = node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/$defs/"))
            .and_then(|name| defs.get(name))
        else {
            break;
        };
        node = next;
    }
    node
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn allowed_fields_follow_refs_and_items() {
        let schema = schema_of::<k8s_openapi::api::apps::v1::Deployment>();
        let fields = allowed_fields(&schema, "spec.template.spec.containers[0]");
        assert!(
            fields.contains(&"imagePullPolicy".to_string()),
            "{fields:?}"
        );
    }

    #[test]
    fn finds_dropped_fields() {
        let a =
            json!({"spec": {"containers": [{"name": "x", "imagePullPolcy": "Never"}]}, "n": null});
        let b = json!({"spec": {"containers": [{"name": "x"}]}});
        assert_eq!(
            first_dropped(&a, &b, String::new()).as_deref(),
            Some("spec.containers[0].imagePullPolcy")
        );
    }
}
