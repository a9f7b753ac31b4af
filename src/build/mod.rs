//! Images: what goes into a build and the content-addressed tag it gets.
//!
//! Owns the build context (which files Docker would receive, per `.dockerignore`) and the tag
//! derived from it (`context`, `ignore`), and building through the Docker Engine API (`docker`).

pub mod context;
pub mod docker;
pub mod ignore;

pub use context::{BuildInput, ContextError, image_tag};

use std::collections::HashMap;

use crate::config::Project;

/// The tag every artifact of `project` gets, keyed by image name.
pub fn image_tags(project: &Project) -> Result<HashMap<String, String>, ContextError> {
    project
        .artifacts
        .iter()
        .map(|a| Ok((a.image.clone(), image_tag(a)?)))
        .collect()
}
