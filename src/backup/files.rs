//! The backups on the backup volume as devloop sees them: parsing the lister pod's output,
//! picking `latest` or a named backup, finding the file a backup Job wrote, and showing sizes and
//! dates. No cluster access here.

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

/// One file on the backup volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupFile {
    pub name: String,
    /// Where the backup CronJob's container sees it.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// RFC 3339, UTC.
    pub modified: String,
    #[serde(skip)]
    pub modified_unix: i64,
}

impl BackupFile {
    pub fn new(dir: &str, name: &str, size: u64, modified_unix: i64) -> Self {
        Self {
            name: name.to_string(),
            path: format!("{dir}/{name}"),
            size,
            modified: Timestamp::from_second(modified_unix)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            modified_unix,
        }
    }
}

/// Parse `SIZE MTIME NAME` lines (what the lister prints); other lines are ignored. Newest first,
/// ties by name (the sample's names embed the time), so `latest` is the first.
pub fn parse_listing(dir: &str, output: &str) -> Vec<BackupFile> {
    let mut files: Vec<BackupFile> = output
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ' ');
            let size = parts.next()?.parse().ok()?;
            let modified = parts.next()?.parse().ok()?;
            let name = parts.next().filter(|n| !n.is_empty())?;
            Some(BackupFile::new(dir, name, size, modified))
        })
        .collect();
    files.sort_by(|a, b| {
        b.modified_unix
            .cmp(&a.modified_unix)
            .then_with(|| b.name.cmp(&a.name))
    });
    files
}

/// What `backup restore` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Latest,
    Named(String),
}

impl Choice {
    pub fn parse(arg: Option<&str>) -> Self {
        match arg {
            None | Some("latest") => Choice::Latest,
            Some(name) => Choice::Named(name.to_string()),
        }
    }
}

/// The backup `choice` names among `files` (newest first); `None` when there is no such file.
/// A name may be given bare or as the path the CronJob sees.
pub fn choose<'a>(files: &'a [BackupFile], choice: &Choice) -> Option<&'a BackupFile> {
    match choice {
        Choice::Latest => files.first(),
        Choice::Named(name) => files.iter().find(|f| &f.name == name || &f.path == name),
    }
}

/// The file a backup Job wrote: one its logs name (by path or name), else the newest file
/// modified since the Job started (`since`, server time, with a little slack for clocks).
pub fn written_by<'a>(
    files: &'a [BackupFile],
    logs: &[String],
    since: Option<i64>,
) -> Option<&'a BackupFile> {
    let mentioned = files.iter().find(|f| {
        logs.iter().any(|line| {
            line.split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '(' | ')' | ','))
                .any(|word| word == f.path || word == f.name)
        })
    });
    mentioned.or_else(|| {
        let since = since?;
        files.iter().find(|f| f.modified_unix >= since - 2)
    })
}

/// `4.1 KiB`, `12 B`, `1.5 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `2026-11-25 13:19:02 UTC`: the volume's clock is UTC, and so is what devloop shows.
pub fn human_time(unix: i64) -> String {
    Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| unix.to_string())
}

/// `5s ago`, `3m ago`, `2h ago`, `4d ago`.
pub fn age(unix: i64, now: i64) -> String {
    let secs = (now - unix).max(0);
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// The files as an aligned table, newest first.
pub fn table(files: &[BackupFile], now: i64) -> String {
    let rows: Vec<[String; 4]> = files
        .iter()
        .map(|f| {
            [
                f.name.clone(),
                human_size(f.size),
                human_time(f.modified_unix),
                age(f.modified_unix, now),
            ]
        })
        .collect();
    let header = [
        "NAME".to_string(),
        "SIZE".into(),
        "MODIFIED".into(),
        "AGE".into(),
    ];
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:w0$}  {:>w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "\
4210 1795000000 musiccat-20261118-110640.sql.gz
900 1795000100 musiccat-20261118-110820.sql.gz
noise that is not a listing line
12 1795000100 with space.sql.gz
";

    #[test]
    fn listing_is_newest_first() {
        let files = parse_listing("/backups", LISTING);
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "with space.sql.gz",
                "musiccat-20261118-110820.sql.gz",
                "musiccat-20261118-110640.sql.gz"
            ]
        );
        assert_eq!(files[2].path, "/backups/musiccat-20261118-110640.sql.gz");
        assert_eq!(files[2].modified, "2026-11-18T11:06:40Z");
        assert_eq!(files[2].size, 4210);
    }

    #[test]
    fn latest_and_named_choices() {
        let files = parse_listing("/backups", LISTING);
        assert_eq!(
            choose(&files, &Choice::parse(None)).unwrap().name,
            "with space.sql.gz"
        );
        assert_eq!(Choice::parse(Some("latest")), Choice::Latest);
        let named = Choice::parse(Some("/backups/musiccat-20261118-110640.sql.gz"));
        assert_eq!(choose(&files, &named).unwrap().size, 4210);
        assert_eq!(choose(&files, &Choice::parse(Some("nope.sql.gz"))), None);
        assert_eq!(choose(&[], &Choice::Latest), None);
    }

    #[test]
    fn the_written_file_is_found_in_logs_or_by_time() {
        let files = parse_listing("/backups", LISTING);
        let logs =
            vec!["backup: written /backups/musiccat-20261118-110640.sql.gz (4.0K)".to_string()];
        assert_eq!(
            written_by(&files, &logs, None).unwrap().name,
            "musiccat-20261118-110640.sql.gz"
        );
        assert_eq!(
            written_by(&files, &[], Some(1_795_000_050)).unwrap().name,
            "with space.sql.gz"
        );
        assert_eq!(written_by(&files, &[], Some(1_795_000_500)), None);
    }

    #[test]
    fn sizes_dates_and_table() {
        assert_eq!(human_size(12), "12 B");
        assert_eq!(human_size(4210), "4.1 KiB");
        assert_eq!(human_size(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(human_time(1_795_000_000), "2026-11-18 11:06:40 UTC");
        assert_eq!(age(100, 3700), "1h ago");
        let files = parse_listing("/backups", LISTING);
        let table = table(&files, 1_795_000_160);
        assert_eq!(
            table,
            "\
NAME                                SIZE  MODIFIED                 AGE
with space.sql.gz                   12 B  2026-11-18 11:08:20 UTC  1m ago
musiccat-20261118-110820.sql.gz    900 B  2026-11-18 11:08:20 UTC  1m ago
musiccat-20261118-110640.sql.gz  4.1 KiB  2026-11-18 11:06:40 UTC  2m ago
"
        );
    }
}
