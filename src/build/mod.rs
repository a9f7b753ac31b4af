//! Images: what goes into a build and the content-addressed tag it gets.
//!
//! Owns the build context (which files Docker would receive, per `.dockerignore`) and the tag
//! derived from it (`context`, `ignore`), and building through the Docker Engine API (`docker`).

pub mod context;
pub mod docker;
pub mod ignore;

pub use context::{BuildInput, ContextError};

use std::collections::HashMap;

use crate::config::Project;

/// The reference an artifact is built, loaded and deployed as: `[registry/]image:tag`.
pub fn reference(registry: Option<&str>, image: &str, tag: &str) -> String {
    match registry {
        Some(registry) => format!("{registry}/{image}:{tag}"),
        None => format!("{image}:{tag}"),
    }
}

/// The reference every artifact of `project` gets, keyed by image name.
pub fn image_tags(project: &Project) -> Result<HashMap<String, String>, ContextError> {
    project
        .artifacts
        .iter()
        .map(|a| {
            let tag = BuildInput::scan(a)?.tag();
            Ok((
                a.image.clone(),
                reference(project.registry.as_deref(), &a.image, &tag),
            ))
        })
        .collect()
}
