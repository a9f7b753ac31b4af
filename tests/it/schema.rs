//! The committed JSON schemas match the types. Run with `DEVLOOP_UPDATE_SCHEMA=1` to rewrite.

use crate::common::repo;

#[test]
fn committed_schemas_are_current() {
    let update = std::env::var("DEVLOOP_UPDATE_SCHEMA").is_ok_and(|v| v == "1");
    for (file, current) in [
        ("devloop.schema.json", devloop::config::project_schema()),
        (
            "docs/profile.schema.json",
            devloop::config::profile_schema(),
        ),
    ] {
        let path = repo().join(file);
        if update {
            std::fs::write(&path, &current).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == current,
            "{file} is stale: run `DEVLOOP_UPDATE_SCHEMA=1 cargo test committed_schemas` and commit it"
        );
    }
}

#[test]
fn schema_knows_every_field_and_is_strict() {
    let schema: serde_json::Value =
        serde_json::from_str(&devloop::config::project_schema()).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    let props = schema["properties"].as_object().unwrap();
    for field in [
        "name",
        "artifacts",
        "manifests",
        "secrets",
        "portForward",
        "backup",
    ] {
        assert!(props.contains_key(field), "{field}");
    }
}
