//! `devloop init`: scaffold a project from the embedded defaults.
//!
//! Writes `devloop.yaml`, the default manifests and profiles adapted to the project's name and
//! image, `.env.example`, a `.env` with fresh random passwords, and `.env` in `.gitignore`.
//! It never overwrites: if any file it would write exists, it writes nothing.

use std::path::{Path, PathBuf};

use crate::cli::{GlobalArgs, InitArgs};
use crate::config::{PROJECT_FILE, shown};
use crate::defaults;
use crate::error::{Error, ExitStatus};
use crate::output::Printer;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("`{name}` cannot be a project name: use lowercase letters, digits and '-'")]
    BadName { name: String, suggestion: String },
    #[error("`{image}` cannot be an image name")]
    BadImage { image: String },
    #[error("refusing to overwrite {} existing file(s): {}", files.len(), files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "))]
    WouldOverwrite { files: Vec<PathBuf> },
    #[error("failed to write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl InitError {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            InitError::Write { .. } => ExitStatus::Failure,
            _ => ExitStatus::InvalidInput,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            InitError::BadName { suggestion, .. } => Some(format!("pass `--name {suggestion}`")),
            InitError::BadImage { .. } => Some("pass e.g. `--image myapp-web`".into()),
            InitError::WouldOverwrite { .. } => Some(
                "move those files away, or run `devloop init` in an empty directory (`-C DIR`)"
                    .into(),
            ),
            InitError::Write { .. } => None,
        }
    }
}

/// Keys of the database Secret the default manifests read (`envFrom`/`secretKeyRef`).
const ENV_KEYS: [&str; 3] = ["POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"];

pub fn run(global: &GlobalArgs, args: &InitArgs, printer: &Printer) -> Result<(), Error> {
    let dir = match &global.dir {
        Some(d) => std::path::absolute(d).unwrap_or_else(|_| d.clone()),
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    };
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "app".into());
    let name = match &args.name {
        Some(n) => n.clone(),
        None => sanitize(&base),
    };
    if !is_dns_label(&name) {
        return Err(InitError::BadName {
            suggestion: sanitize(&name),
            name,
        }
        .into());
    }
    let image = args.image.clone().unwrap_or_else(|| name.clone());
    if crate::config::split_image(&image).1.is_some() || !is_image_name(&image) {
        return Err(InitError::BadImage { image }.into());
    }

    let mut plan: Vec<(PathBuf, String)> =
        vec![(dir.join(PROJECT_FILE), project_file(&name, &image))];
    for file in defaults::files() {
        plan.push((dir.join(&file.path), file.render(&name, &image)));
    }
    plan.push((dir.join(".env.example"), env_example(&name)));

    let existing: Vec<PathBuf> = plan
        .iter()
        .filter(|(p, _)| p.exists())
        .map(|(p, _)| shown(p))
        .collect();
    if !existing.is_empty() {
        return Err(InitError::WouldOverwrite { files: existing }.into());
    }

    for (path, text) in &plan {
        write(path, text)?;
    }
    let mut written: Vec<PathBuf> = plan.iter().map(|(p, _)| shown(p)).collect();

    let env = dir.join(".env");
    let env_note = if env.exists() {
        format!("kept your existing {}", shown(&env).display())
    } else {
        write(&env, &env_file(&name))?;
        written.push(shown(&env));
        format!(
            "{} has fresh random passwords; keep it out of git",
            shown(&env).display()
        )
    };
    ensure_gitignored(&dir.join(".gitignore"), ".env")?;

    printer.info(&format!("Created project `{name}` (image `{image}`):"));
    for path in &written {
        printer.info(&format!("  {}", path.display()));
    }
    printer.info(&format!("  {env_note}"));
    printer.info("Next:");
    if !dir.join("Dockerfile").exists() {
        printer.info("  - add a Dockerfile for your app (it listens on port 8000 in the defaults)");
    }
    printer.info(
        "  - `devloop render` shows what would be deployed; `devloop doctor` checks your setup",
    );
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), InitError> {
    let fail = |source| InitError::Write {
        path: shown(path),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    // `create_new` so a file that appeared since the check is still never overwritten.
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)
}

fn ensure_gitignored(path: &Path, entry: &str) -> Result<(), InitError> {
    let current = std::fs::read_to_string(path).unwrap_or_default();
    if current
        .lines()
        .any(|l| l.trim() == entry || l.trim() == format!("/{entry}"))
    {
        return Ok(());
    }
    let mut text = current;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(entry);
    text.push('\n');
    std::fs::write(path, text).map_err(|source| InitError::Write {
        path: shown(path),
        source,
    })
}

fn project_file(name: &str, image: &str) -> String {
    format!(
        r#"# devloop project: see docs/configuration.md in the devloop repository.
name: {name}

artifacts:
  - image: {image}            # manifests refer to it as `image: {image}`
    context: .
    dockerfile: Dockerfile

manifests:
  infra:                      # persistent: applied once, never deleted by devloop
    - k8s/infra/
  app:                        # redeployed by every `devloop up`
    - k8s/app/

secrets:
  - name: {name}-db
    envFile: .env             # not committed; `.env.example` shows the keys
    example: .env.example

portForward:
  - resource: service/web
    port: 8000
    localPort: 8000

backup:
  cronJob: postgres-backup
  restoreJob: k8s/restore-job.yaml
"#
    )
}

fn env_example(name: &str) -> String {
    let mut text = String::from("# Copy to .env and change the values. Never commit .env.\n");
    for key in ENV_KEYS {
        let value = match key {
            "POSTGRES_USER" | "POSTGRES_DB" => name.replace('-', "_"),
            _ => "change-me".to_string(),
        };
        text.push_str(&format!("{key}={value}\n"));
    }
    text
}

fn env_file(name: &str) -> String {
    let mut text = String::from("# Generated by devloop init. Never commit this file.\n");
    for key in ENV_KEYS {
        let value = match key {
            "POSTGRES_USER" | "POSTGRES_DB" => name.replace('-', "_"),
            _ => random_secret(),
        };
        text.push_str(&format!("{key}={value}\n"));
    }
    text
}

/// 32 hex characters from the OS's random source.
fn random_secret() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // No /dev/urandom: fall back to the std hasher's per-process random keys.
        use std::hash::{BuildHasher, RandomState};
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let v = RandomState::new().hash_one(i);
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_image_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'.' | b'_' | b'-' | b'/' | b':')
        })
}

/// A DNS label made from a directory name: `My_App` → `my-app`.
fn sanitize(s: &str) -> String {
    let mapped: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let trimmed: String = mapped.trim_matches('-').chars().take(63).collect();
    if trimmed.is_empty() {
        "app".into()
    } else {
        trimmed
    }
}
