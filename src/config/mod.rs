//! The project model: reading `devloop.yaml` and a profile strictly, and resolving them into a
//! [`Project`] that commands use.
//!
//! Owns: finding the project root, parsing (with file/line/column errors and "did you mean"),
//! checks that need no manifests (names, paths, duplicates), profile selection and the profile's
//! artifact and namespace overrides. Does not own: reading manifests or applying patches to them
//! (that is `deploy::render`).

pub mod locate;
pub mod wire;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::de::DeserializeOwned;

use crate::diagnostic::{Diagnostic, suggest};
use locate::{Position, YamlIndex};
pub use wire::{ClusterOption, PatchOptions, ProfileOptions, ProjectOptions};

pub const PROJECT_FILE: &str = "devloop.yaml";
pub const PROFILES_DIR: &str = "profiles";
pub const DEFAULT_PROFILE: &str = "dev";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no {PROJECT_FILE} in {} or any parent directory", dir.display())]
    NotFound { dir: PathBuf },
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
}

impl ConfigError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ConfigError::NotFound { .. } => Some(
                "run `devloop init` to create one, or pass `-C DIR` to point at a project".into(),
            ),
            _ => None,
        }
    }
}

impl From<Diagnostic> for ConfigError {
    fn from(d: Diagnostic) -> Self {
        ConfigError::Invalid(Box::new(d))
    }
}

/// Where a setting came from, so later stages can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub position: Option<Position>,
    pub field: String,
}

impl Origin {
    pub fn diagnostic(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(&self.file, message)
            .at(self.position)
            .field(self.field.clone())
    }
}

/// Which tier an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Applied once, never deleted by devloop.
    Persistent,
    /// Redeployed per profile; removed by `down`.
    Profile,
}

impl Tier {
    pub fn label(self) -> &'static str {
        match self {
            Tier::Persistent => "persistent",
            Tier::Profile => "profile",
        }
    }
}

/// A fully resolved project: paths absolute, the profile chosen and its overrides applied.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub file: PathBuf,
    pub name: String,
    pub namespace: Option<String>,
    pub cluster: ClusterOption,
    /// Where images are pushed for clusters that cannot load them directly.
    pub registry: Option<String>,
    pub artifacts: Vec<Artifact>,
    pub manifests: Vec<ManifestSource>,
    pub secrets: Vec<SecretSource>,
    pub forwards: Vec<PortForward>,
    pub backup: Option<Backup>,
    pub profile: Profile,
}

#[derive(Debug, Clone)]
pub struct Artifact {
    pub image: String,
    pub context: PathBuf,
    /// Absolute path of the Dockerfile.
    pub dockerfile: PathBuf,
    pub target: Option<String>,
    pub build_args: IndexMap<String, String>,
    pub sync: Vec<wire::SyncRule>,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct ManifestSource {
    pub path: PathBuf,
    pub tier: Tier,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct SecretSource {
    pub name: String,
    pub env_file: PathBuf,
    pub example: Option<PathBuf>,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForward {
    /// Lowercase kind: `service`, `deployment`, `statefulset` or `pod`.
    pub kind: String,
    pub name: String,
    pub port: u16,
    pub local_port: u16,
}

#[derive(Debug, Clone)]
pub struct Backup {
    pub cron_job: String,
    pub restore_job: Option<PathBuf>,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    /// `None` when the profile has no file (only possible for `dev`).
    pub file: Option<PathBuf>,
    pub patches: Vec<(PatchOptions, Origin)>,
}

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `-C DIR`; the current directory when `None`.
    pub dir: Option<PathBuf>,
    /// `-p NAME`; `dev` when `None`.
    pub profile: Option<String>,
    /// `-n NAMESPACE`; overrides every file.
    pub namespace: Option<String>,
}

/// Find the project above `start` (inclusive).
pub fn find_root(start: &Path) -> Result<PathBuf, ConfigError> {
    let start = absolute(start);
    start
        .ancestors()
        .find(|dir| dir.join(PROJECT_FILE).is_file())
        .map(Path::to_path_buf)
        .ok_or(ConfigError::NotFound { dir: start })
}

/// Load and resolve the project and profile the user selected.
pub fn load(selection: &Selection) -> Result<Project, ConfigError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let root = find_root(selection.dir.as_deref().unwrap_or(&cwd))?;
    let file = root.join(PROJECT_FILE);
    let (options, index) = read_yaml::<ProjectOptions>(&file)?;
    let shown = shown(&file);
    let origin = |field: String| Origin {
        position: index.find(0, &field),
        file: shown.clone(),
        field,
    };

    check_dns_label(&options.name, &origin("name".into()), "the project name")?;
    if let Some(ns) = &options.namespace {
        check_dns_label(ns, &origin("namespace".into()), "a namespace")?;
    }

    let profile_name = selection
        .profile
        .clone()
        .unwrap_or_else(|| DEFAULT_PROFILE.to_string());
    let (profile_options, profile) = load_profile(&root, &profile_name)?;

    let artifacts = resolve_artifacts(&root, &options, &profile_options, &profile, &origin)?;

    let mut manifests = Vec::new();
    for (tier, list, key) in [
        (
            Tier::Persistent,
            &options.manifests.infra,
            "manifests.infra",
        ),
        (Tier::Profile, &options.manifests.app, "manifests.app"),
    ] {
        for (i, rel) in list.iter().enumerate() {
            let origin = origin(format!("{key}[{i}]"));
            manifests.push(ManifestSource {
                path: existing_path(&root, rel, &origin, "manifest path")?,
                tier,
                origin,
            });
        }
    }
    if let Some(file) = &profile.file {
        let index = YamlIndex::new(&read_text(file)?);
        for (i, rel) in profile_options.manifests.iter().enumerate() {
            let field = format!("manifests[{i}]");
            let origin = Origin {
                position: index.find(0, &field),
                file: shown_path(file),
                field,
            };
            manifests.push(ManifestSource {
                path: existing_path(&root, rel, &origin, "manifest path")?,
                tier: Tier::Profile,
                origin,
            });
        }
    }

    let mut secrets: Vec<SecretSource> = Vec::new();
    for (i, s) in options.secrets.iter().enumerate() {
        let origin = origin(format!("secrets[{i}]"));
        check_dns_subdomain(&s.name, &origin, "a Secret name")?;
        if secrets.iter().any(|other| other.name == s.name) {
            return Err(origin
                .diagnostic(format!("Secret `{}` is listed twice", s.name))
                .hint("give each secret a distinct name, or merge their env files")
                .into());
        }
        secrets.push(SecretSource {
            name: s.name.clone(),
            // Existence is checked when rendering, where the fix (copy the example) is said.
            env_file: root.join(&s.env_file),
            example: s.example.as_ref().map(|e| root.join(e)),
            origin,
        });
    }

    let mut forwards: Vec<PortForward> = Vec::new();
    for (i, f) in options.port_forward.iter().enumerate() {
        let origin = origin(format!("portForward[{i}].resource"));
        let (kind, name) = parse_forward_resource(&f.resource, &origin)?;
        if f.port == 0 {
            return Err(origin
                .diagnostic("port 0 is not a port")
                .field(format!("portForward[{i}].port"))
                .into());
        }
        if let Some(other) = forwards.iter().find(|o| o.local_port == f.local_port) {
            return Err(origin
                .diagnostic(format!(
                    "local port {} is already forwarded to {}/{}",
                    f.local_port, other.kind, other.name
                ))
                .field(format!("portForward[{i}].localPort"))
                .hint("give each forward its own `localPort`")
                .into());
        }
        forwards.push(PortForward {
            kind,
            name,
            port: f.port,
            local_port: f.local_port,
        });
    }

    let backup = match &options.backup {
        None => None,
        Some(b) => {
            let cron_origin = origin("backup.cronJob".into());
            let restore_job = match &b.restore_job {
                None => None,
                Some(rel) => Some(existing_path(
                    &root,
                    rel,
                    &origin("backup.restoreJob".into()),
                    "restore Job manifest",
                )?),
            };
            Some(Backup {
                cron_job: b.cron_job.clone(),
                restore_job,
                origin: cron_origin,
            })
        }
    };

    if let Some(registry) = &options.registry {
        check_registry(registry, &origin("registry".into()))?;
    }

    let namespace = selection
        .namespace
        .clone()
        .or_else(|| profile_options.namespace.clone())
        .or_else(|| options.namespace.clone());

    Ok(Project {
        root,
        file,
        name: options.name,
        namespace,
        cluster: options.cluster,
        registry: options
            .registry
            .map(|r| r.trim_end_matches('/').to_string()),
        artifacts,
        manifests,
        secrets,
        forwards,
        backup,
        profile,
    })
}

fn resolve_artifacts(
    root: &Path,
    options: &ProjectOptions,
    profile_options: &ProfileOptions,
    profile: &Profile,
    origin: &dyn Fn(String) -> Origin,
) -> Result<Vec<Artifact>, ConfigError> {
    let mut artifacts: Vec<Artifact> = Vec::new();
    for (i, a) in options.artifacts.iter().enumerate() {
        let image_origin = origin(format!("artifacts[{i}].image"));
        check_image_name(&a.image, &image_origin)?;
        if artifacts.iter().any(|other| other.image == a.image) {
            return Err(image_origin
                .diagnostic(format!("artifact `{}` is listed twice", a.image))
                .hint("remove one of them; use a profile to build another target")
                .into());
        }
        let context = existing_path(
            root,
            &a.context,
            &origin(format!("artifacts[{i}].context")),
            "build context",
        )?;
        if !context.is_dir() {
            return Err(origin(format!("artifacts[{i}].context"))
                .diagnostic(format!("build context `{}` is not a directory", a.context))
                .into());
        }
        let dockerfile = context.join(&a.dockerfile);
        if !dockerfile.is_file() {
            return Err(origin(format!("artifacts[{i}].dockerfile"))
                .diagnostic(format!(
                    "Dockerfile `{}` not found in build context `{}`",
                    a.dockerfile, a.context
                ))
                .hint(format!(
                    "create {} or set `dockerfile:` to its path relative to the context",
                    shown(&dockerfile).display()
                ))
                .into());
        }
        check_sync(&a.sync, &|field| {
            origin(format!("artifacts[{i}].sync{field}"))
        })?;
        artifacts.push(Artifact {
            image: a.image.clone(),
            context,
            dockerfile,
            target: a.target.clone(),
            build_args: a.build_args.clone(),
            sync: a.sync.clone(),
            origin: image_origin,
        });
    }

    // Profile overrides, keyed by image: every key must name an artifact.
    if let Some(file) = &profile.file {
        let index = YamlIndex::new(&read_text(file)?);
        for (image, over) in &profile_options.artifacts {
            let Some(artifact) = artifacts.iter_mut().find(|a| &a.image == image) else {
                let field = format!("artifacts.{image}");
                let names: Vec<&str> = artifacts.iter().map(|a| a.image.as_str()).collect();
                return Err(Diagnostic::new(
                    shown(file),
                    format!("no artifact `{image}` in {PROJECT_FILE}"),
                )
                .at(index.find(0, &field))
                .field(field)
                .hint(match suggest(image, names.iter().copied()) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => format!("artifacts are: {}", list_or_none(&names)),
                })
                .into());
            };
            if let Some(target) = &over.target {
                artifact.target = Some(target.clone());
            }
            for (k, v) in &over.build_args {
                artifact.build_args.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(artifacts)
}

/// Sync rules: `src` a glob, `dest` a path, `run` a program with arguments. `origin` takes the
/// field below `sync` (`[0].src`).
fn check_sync(
    rules: &[wire::SyncRule],
    origin: &dyn Fn(String) -> Origin,
) -> Result<(), ConfigError> {
    if let Err(crate::sync::SyncError::Glob {
        index, src, source, ..
    }) = crate::sync::Rules::new("", rules)
    {
        return Err(origin(format!("[{index}].src"))
            .diagnostic(format!(
                "sync `src` `{src}` is not a glob: {}",
                source.kind()
            ))
            .hint("a glob relative to the build context, such as `www/**` or `app/**/*.py`")
            .into());
    }
    for (j, rule) in rules.iter().enumerate() {
        if rule.dest.trim().is_empty() {
            return Err(origin(format!("[{j}].dest"))
                .diagnostic("sync `dest` is empty")
                .hint("the directory in the container the files go to, such as `/app`")
                .into());
        }
        if let Some(run) = &rule.run
            && run.first().is_none_or(|program| program.trim().is_empty())
        {
            return Err(origin(format!("[{j}].run"))
                .diagnostic("sync `run` names no program")
                .hint(
                    "a program and its arguments, such as `[\"kill\", \"-HUP\", \"1\"]`, or \
                     `[\"sh\", \"-c\", \"...\"]` for a shell command; remove `run` to run nothing",
                )
                .into());
        }
    }
    Ok(())
}

/// Select the profile: `profiles/NAME.yaml`, or no patches for a `dev` without a file.
fn load_profile(root: &Path, name: &str) -> Result<(ProfileOptions, Profile), ConfigError> {
    let file = root.join(PROFILES_DIR).join(format!("{name}.yaml"));
    if !file.is_file() {
        if name == DEFAULT_PROFILE {
            let profile = Profile {
                name: name.to_string(),
                file: None,
                patches: Vec::new(),
            };
            return Ok((ProfileOptions::default(), profile));
        }
        let available = available_profiles(root);
        let names: Vec<&str> = available.iter().map(String::as_str).collect();
        let hint = match suggest(name, names.iter().copied()) {
            Some(best) => format!("did you mean `-p {best}`?"),
            None => format!(
                "create {}, or pick one of: {}",
                shown(&file).display(),
                list_or_none(&names)
            ),
        };
        return Err(
            Diagnostic::new(shown(&file), format!("profile `{name}` does not exist"))
                .hint(hint)
                .into(),
        );
    }
    let (options, index) = read_yaml::<ProfileOptions>(&file)?;
    let shown_file = shown(&file);
    if let Some(ns) = &options.namespace {
        let origin = Origin {
            file: shown_file.clone(),
            position: index.find(0, "namespace"),
            field: "namespace".into(),
        };
        check_dns_label(ns, &origin, "a namespace")?;
    }
    let patches = options
        .patches
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let field = format!("patches[{i}]");
            let origin = Origin {
                file: shown_file.clone(),
                position: index.find(0, &field),
                field,
            };
            (p.clone(), origin)
        })
        .collect();
    let profile = Profile {
        name: name.to_string(),
        file: Some(file),
        patches,
    };
    Ok((options, profile))
}

/// Profile names found in `profiles/`, sorted, plus `dev` (which always exists).
pub fn available_profiles(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join(PROFILES_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".yaml").map(str::to_string)
        })
        .collect();
    if !names.iter().any(|n| n == DEFAULT_PROFILE) {
        names.push(DEFAULT_PROFILE.to_string());
    }
    names.sort();
    names
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    }
}

pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown(path),
        source,
    })
}

/// Parse one strict YAML document, with the error located in the file.
pub fn read_yaml<T: DeserializeOwned>(path: &Path) -> Result<(T, YamlIndex), ConfigError> {
    let text = read_text(path)?;
    let index = YamlIndex::new(&text);
    let value = parse_yaml::<T>(&text, path, &index)?;
    Ok((value, index))
}

pub fn parse_yaml<T: DeserializeOwned>(
    text: &str,
    path: &Path,
    index: &YamlIndex,
) -> Result<T, ConfigError> {
    // An empty file is an empty mapping, so a missing required field is reported as such.
    let text = if text.trim().is_empty() { "{}" } else { text };
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let field = err.path().to_string();
        let field = if field == "." { String::new() } else { field };
        let inner = err.into_inner();
        let position = inner
            .location()
            .map(|l| Position {
                line: l.line(),
                column: l.column(),
            })
            .or_else(|| index.find(0, &field));
        ConfigError::from(Diagnostic::from_serde(
            &shown(path),
            &field,
            position,
            &inner.to_string(),
        ))
    })
}

fn existing_path(
    root: &Path,
    rel: &str,
    origin: &Origin,
    what: &str,
) -> Result<PathBuf, ConfigError> {
    let path = root.join(rel);
    if path.exists() {
        return Ok(path);
    }
    Err(origin
        .diagnostic(format!("{what} `{rel}` does not exist"))
        .hint(format!(
            "paths are relative to the project root ({}); create it or fix the path",
            shown(root).display()
        ))
        .into())
}

fn parse_forward_resource(
    resource: &str,
    origin: &Origin,
) -> Result<(String, String), ConfigError> {
    const KINDS: [&str; 4] = ["service", "deployment", "statefulset", "pod"];
    let bad =
        |msg: String, hint: String| -> ConfigError { origin.diagnostic(msg).hint(hint).into() };
    let Some((kind, name)) = resource.split_once('/') else {
        return Err(bad(
            format!("`{resource}` is not KIND/NAME"),
            format!("write e.g. `service/{resource}`"),
        ));
    };
    let kind = kind.to_ascii_lowercase();
    let kind = match kind.as_str() {
        "svc" | "services" => "service".to_string(),
        "deploy" | "deployments" => "deployment".to_string(),
        "sts" | "statefulsets" => "statefulset".to_string(),
        "pods" | "po" => "pod".to_string(),
        _ => kind,
    };
    if !KINDS.contains(&kind.as_str()) {
        return Err(bad(
            format!("cannot forward to a `{kind}`"),
            match suggest(&kind, KINDS) {
                Some(best) => format!("did you mean `{best}/{name}`?"),
                None => format!("use one of: {}", KINDS.join(", ")),
            },
        ));
    }
    check_dns_subdomain(name, origin, "a resource name")?;
    Ok((kind, name.to_string()))
}

/// RFC 1123 label: what Kubernetes requires of namespaces and what labels values allow.
fn check_dns_label(value: &str, origin: &Origin, what: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        return Ok(());
    }
    let fixed: String = value
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .chars()
        .take(63)
        .collect();
    Err(origin
        .diagnostic(format!(
            "`{value}` is not valid as {what}: use lowercase letters, digits and '-', at most 63"
        ))
        .maybe_hint((!fixed.is_empty()).then(|| format!("try `{fixed}`")))
        .into())
}

fn check_dns_subdomain(value: &str, origin: &Origin, what: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if ok {
        return Ok(());
    }
    Err(origin
        .diagnostic(format!(
            "`{value}` is not valid as {what}: use lowercase letters, digits, '-' and '.'"
        ))
        .into())
}

/// An image repository name without tag or digest, as Docker accepts it.
fn check_image_name(image: &str, origin: &Origin) -> Result<(), ConfigError> {
    let (repo, tag) = split_image(image);
    if tag.is_some() {
        return Err(origin
            .diagnostic(format!("artifact image `{image}` has a tag or digest"))
            .hint(format!(
                "write `image: {repo}`; devloop tags each build by its content"
            ))
            .into());
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && c.as_bytes()[0].is_ascii_alphanumeric()
    };
    let mut parts: Vec<&str> = repo.split('/').collect();
    // A first component with '.' or ':' (or "localhost") is a registry host.
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        parts.remove(0);
    }
    if parts.iter().all(|c| component_ok(c)) {
        return Ok(());
    }
    Err(origin
        .diagnostic(format!("`{image}` is not a valid image name"))
        .hint("use lowercase letters, digits, '.', '_', '-' and '/', e.g. `myapp-web`")
        .into())
}

/// `host[:port][/path]`, no scheme: what Docker accepts before an image name.
fn check_registry(registry: &str, origin: &Origin) -> Result<(), ConfigError> {
    if let Some((scheme, rest)) = registry.split_once("://") {
        return Err(origin
            .diagnostic(format!(
                "registry `{registry}` has a scheme (`{scheme}://`)"
            ))
            .hint(format!("write `registry: {rest}`"))
            .into());
    }
    let host = registry.split('/').next().unwrap_or_default();
    let (name, port) = host.split_once(':').unwrap_or((host, "0"));
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        && port.parse::<u16>().is_ok();
    if ok {
        return Ok(());
    }
    Err(origin
        .diagnostic(format!("`{registry}` is not a registry address"))
        .hint("write `host[:port][/path]`, e.g. `localhost:5000` or `registry.example.com/team`")
        .into())
}

/// Split `registry:5000/name:tag@sha256:…` into the repository and the rest (tag or digest).
pub fn split_image(image: &str) -> (&str, Option<&str>) {
    let without_digest = image.split_once('@').map_or(image, |(r, _)| r);
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let repo_end = without_digest[last_slash..]
        .find(':')
        .map_or(without_digest.len(), |i| last_slash + i);
    let repo = &image[..repo_end];
    let rest = &image[repo_end..];
    (repo, (!rest.is_empty()).then_some(rest))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// How a path is shown to the user: relative to the working directory when inside it.
pub fn shown(path: &Path) -> PathBuf {
    shown_path(path)
}

fn shown_path(path: &Path) -> PathBuf {
    let Ok(cwd) = std::env::current_dir() else {
        return path.to_path_buf();
    };
    match absolute(path).strip_prefix(&cwd) {
        Ok(rel) if rel.as_os_str().is_empty() => PathBuf::from("."),
        Ok(rel) => rel.to_path_buf(),
        Err(_) => path.to_path_buf(),
    }
}

/// The JSON schema of `devloop.yaml`, as committed in `devloop.schema.json`.
pub fn project_schema() -> String {
    let schema = schemars::schema_for!(ProjectOptions);
    serde_json::to_string_pretty(&schema).expect("schema serializes") + "\n"
}

/// The JSON schema of a profile file.
pub fn profile_schema() -> String {
    let schema = schemars::schema_for!(ProfileOptions);
    serde_json::to_string_pretty(&schema).expect("schema serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_images() {
        assert_eq!(split_image("web"), ("web", None));
        assert_eq!(split_image("web:1"), ("web", Some(":1")));
        assert_eq!(
            split_image("localhost:5000/a/web:dl-1@sha256:ab"),
            ("localhost:5000/a/web", Some(":dl-1@sha256:ab"))
        );
        assert_eq!(
            split_image("localhost:5000/web"),
            ("localhost:5000/web", None)
        );
    }
}
