//! Applying a profile's patches to the loaded objects.
//!
//! A patch selects one object by kind and name and changes it in a fixed order: `replicas`, then
//! `containers` (by container name: image, command, args, env by variable name, resources and
//! probes merged), then `merge` (an RFC 7386 JSON merge patch). A patch that matches nothing, or more than one
//! object, is an error that points at the patch.

use serde_json::{Map, Value, json};

use super::manifest::{Object, pod_spec_pointer};
use crate::config::wire::ContainerPatch;
use crate::config::{Origin, PatchOptions};
use crate::diagnostic::{Diagnostic, suggest};

pub fn apply_all(
    objects: &mut [Object],
    patches: &[(PatchOptions, Origin)],
) -> Result<(), Diagnostic> {
    for (patch, origin) in patches {
        apply(objects, patch, origin)?;
    }
    Ok(())
}

fn apply(objects: &mut [Object], patch: &PatchOptions, origin: &Origin) -> Result<(), Diagnostic> {
    let matches: Vec<usize> = objects
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            o.kind() == patch.kind
                && o.name() == patch.name
                && patch
                    .namespace
                    .as_deref()
                    .is_none_or(|ns| o.namespace() == Some(ns))
        })
        .map(|(i, _)| i)
        .collect();
    let target = format!("{}/{}", patch.kind, patch.name);
    let index = match matches.as_slice() {
        [one] => *one,
        [] => return Err(no_match(objects, patch, origin, &target)),
        many => {
            let found: Vec<String> = many.iter().map(|&i| objects[i].source.describe()).collect();
            return Err(origin
                .diagnostic(format!("patch for {target} matches {} objects", many.len()))
                .hint(format!(
                    "add `namespace:` to the patch to pick one ({})",
                    found.join("; ")
                )));
        }
    };
    let object = &mut objects[index];

    if let Some(replicas) = patch.replicas {
        if !matches!(object.kind(), "Deployment" | "StatefulSet" | "ReplicaSet") {
            return Err(origin
                .diagnostic(format!("{target} has no replicas"))
                .field(format!("{}.replicas", origin.field))
                .hint("`replicas` applies to Deployments, StatefulSets and ReplicaSets"));
        }
        ensure_object(&mut object.value, "spec").insert("replicas".into(), replicas.into());
    }

    for (name, change) in &patch.containers {
        let field = format!("{}.containers.{name}", origin.field);
        let pointer = pod_spec_pointer(object.kind()).ok_or_else(|| {
            origin
                .diagnostic(format!("{target} has no containers"))
                .field(field.clone())
        })?;
        let spec = object.pointer_mut(pointer).and_then(Value::as_object_mut);
        let Some(spec) = spec else {
            return Err(origin
                .diagnostic(format!("{target} has no pod spec at `{pointer}`"))
                .field(field));
        };
        let container = find_container(spec, name).map_err(|names| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            origin
                .diagnostic(format!("{target} has no container `{name}`"))
                .field(field.clone())
                .hint(match suggest(name, names.iter().copied()) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => format!("its containers are: {}", names.join(", ")),
                })
        })?;
        patch_container(container, change);
    }

    if let Some(merge) = &patch.merge {
        let mut value = Value::Object(std::mem::take(&mut object.value));
        merge_patch(&mut value, merge);
        object.value = match value {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        // A merge patch may not change what the object is; that would be a different object.
        for field in ["apiVersion", "kind"] {
            if object.value.get(field).and_then(Value::as_str).is_none() {
                return Err(origin
                    .diagnostic(format!("merge patch removes `{field}` from {target}"))
                    .field(format!("{}.merge", origin.field)));
            }
        }
        if object.name() != patch.name {
            return Err(origin
                .diagnostic(format!("merge patch renames {target}"))
                .field(format!("{}.merge.metadata.name", origin.field))
                .hint("patches change objects; add a manifest to the profile to create another"));
        }
    }
    Ok(())
}

fn no_match(objects: &[Object], patch: &PatchOptions, origin: &Origin, target: &str) -> Diagnostic {
    let same_kind: Vec<&str> = objects
        .iter()
        .filter(|o| o.kind() == patch.kind)
        .map(Object::name)
        .collect();
    let hint = if let Some(best) = suggest(&patch.name, same_kind.iter().copied()) {
        format!("did you mean `name: {best}`?")
    } else if !same_kind.is_empty() {
        format!("{} objects are: {}", patch.kind, same_kind.join(", "))
    } else {
        let kinds: Vec<&str> = objects.iter().map(Object::kind).collect();
        match suggest(&patch.kind, kinds.iter().copied()) {
            Some(best) => format!("did you mean `kind: {best}`?"),
            None => format!("no manifest defines a {}", patch.kind),
        }
    };
    origin
        .diagnostic(format!("patch targets {target}, which no manifest defines"))
        .hint(hint)
}

fn ensure_object<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = map.entry(key).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("just made an object")
}

/// The container named `name` among containers and initContainers, or the names that exist.
fn find_container<'a>(
    spec: &'a mut Map<String, Value>,
    name: &str,
) -> Result<&'a mut Map<String, Value>, Vec<String>> {
    let mut names = Vec::new();
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(items)) = spec.get(list) {
            for item in items {
                if let Some(n) = item.get("name").and_then(Value::as_str) {
                    names.push(n.to_string());
                }
            }
        }
    }
    let found = ["containers", "initContainers"]
        .into_iter()
        .find_map(|list| {
            let items = spec.get(list)?.as_array()?;
            let i = items
                .iter()
                .position(|item| item.get("name").and_then(Value::as_str) == Some(name))?;
            Some((list, i))
        });
    let Some((list, i)) = found else {
        return Err(names);
    };
    spec.get_mut(list)
        .and_then(|items| items.get_mut(i))
        .and_then(Value::as_object_mut)
        .ok_or(names)
}

fn patch_container(container: &mut Map<String, Value>, change: &ContainerPatch) {
    if let Some(image) = &change.image {
        container.insert("image".into(), image.clone().into());
    }
    if let Some(command) = &change.command {
        container.insert("command".into(), json!(command));
    }
    if let Some(args) = &change.args {
        container.insert("args".into(), json!(args));
    }
    if !change.env.is_empty() {
        let env = container.entry("env").or_insert_with(|| json!([]));
        if !env.is_array() {
            *env = json!([]);
        }
        let env = env.as_array_mut().expect("just made an array");
        for (name, value) in &change.env {
            let existing = env
                .iter()
                .position(|e| e.get("name").and_then(Value::as_str) == Some(name));
            match (existing, value) {
                // Replace value *and* any valueFrom: the profile's literal wins.
                (Some(i), Some(v)) => env[i] = json!({"name": name, "value": v}),
                (None, Some(v)) => env.push(json!({"name": name, "value": v})),
                (Some(i), None) => {
                    env.remove(i);
                }
                (None, None) => {}
            }
        }
    }
    if let Some(resources) = &change.resources {
        let target = ensure_object(container, "resources");
        for (key, values) in [
            ("requests", &resources.requests),
            ("limits", &resources.limits),
        ] {
            if values.is_empty() {
                continue;
            }
            let map = ensure_object(target, key);
            for (name, quantity) in values {
                map.insert(name.clone(), quantity.to_json());
            }
        }
    }
    for (key, probe) in [
        ("readinessProbe", &change.readiness_probe),
        ("livenessProbe", &change.liveness_probe),
        ("startupProbe", &change.startup_probe),
    ] {
        let Some(probe) = probe else { continue };
        if probe.is_null() {
            container.remove(key);
            continue;
        }
        let target = container.entry(key).or_insert(Value::Null);
        merge_patch(target, probe);
    }
}

/// RFC 7386: objects merge key by key, `null` removes a key, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("just made an object");
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x"});
        merge_patch(
            &mut doc,
            &json!({"a": {"b": null, "c": [3], "e": true}, "f": 1}),
        );
        assert_eq!(doc, json!({"a": {"c": [3], "e": true}, "d": "x", "f": 1}));
    }

    #[test]
    fn probes_merge_and_null_removes_one() {
        let mut container = json!({
            "name": "web",
            "readinessProbe": {"httpGet": {"path": "/health/", "port": "http"}, "periodSeconds": 5},
            "livenessProbe": {"tcpSocket": {"port": 8000}}
        });
        let change: ContainerPatch = serde_json::from_value(json!({
            "readinessProbe": {"periodSeconds": 1, "initialDelaySeconds": 1},
            "livenessProbe": null,
            "startupProbe": {"tcpSocket": {"port": 8000}}
        }))
        .unwrap();
        patch_container(container.as_object_mut().unwrap(), &change);
        assert_eq!(
            container,
            json!({
                "name": "web",
                "readinessProbe": {"httpGet": {"path": "/health/", "port": "http"},
                    "periodSeconds": 1, "initialDelaySeconds": 1},
                "startupProbe": {"tcpSocket": {"port": 8000}}
            })
        );
    }
}
