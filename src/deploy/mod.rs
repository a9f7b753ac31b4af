//! From manifests on disk to the objects devloop applies.
//!
//! Owns reading manifests (`manifest`), applying a profile's patches (`patch`), generating
//! Secrets from env files (`secrets`), checking objects against the Kubernetes API types
//! (`validate`) and putting it together in apply order (`render`). Applying to a cluster arrives
//! with `devloop up`.

pub mod apply;
pub mod manifest;
pub mod patch;
pub mod render;
pub mod rollout;
pub mod secrets;
pub mod validate;

pub use manifest::{Object, ObjectKey, Source};
pub use render::{RenderOptions, Rendered, render};
