//! `spoollock-mangen OUTDIR`: write the `spoollock(1)` manual pages, one
//! for the command and one per subcommand (`spoollock-run(1)`, ...),
//! rendered from the same clap definition the `spoollock` binary parses,
//! so the pages cannot drift from the command line.
//!
//! Used by the packaging (`packaging/debian/build-deb.sh`, the RPM spec,
//! `packaging/install.sh`); not installed.

#[allow(dead_code)] // the CLI's helper methods are used by `spoollock` only
#[path = "spoollock/cli.rs"]
mod cli;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_mangen::Man;
use spoollock_protocol::paths;

const SECTION: &str = "1";
const MANUAL: &str = "User Commands";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: spoollock-mangen OUTDIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(&out)) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("spoollock-mangen: {}: {e}", Path::new(&out).display());
            ExitCode::FAILURE
        }
    }
}

/// Write every page into `out` (created if missing); returns their paths.
fn generate(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let mut cmd = cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    let path = out.join(format!("spoollock.{SECTION}"));
    std::fs::write(&path, render(&cmd, true)?)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let path = out.join(format!("spoollock-{}.{SECTION}", sub.get_name()));
        std::fs::write(&path, render(sub, false)?)?;
        written.push(path);
    }
    Ok(written)
}

/// One page: clap_mangen's sections, then ours (exit status from the
/// command's `after_help`, files, see also).
fn render(cmd: &clap::Command, top: bool) -> std::io::Result<Vec<u8>> {
    let version = cmd.get_version().unwrap_or(env!("CARGO_PKG_VERSION"));
    let man = Man::new(cmd.clone())
        .section(SECTION)
        .date(date())
        .source(format!("spoollock {version}"))
        .manual(MANUAL);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    if top {
        page.write_all(DESCRIPTION_MORE.as_bytes())?;
    }
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut page)?;
    }
    if top {
        man.render_subcommands_section(&mut page)?;
    }
    if let Some(text) = cmd.get_after_help() {
        page.write_all(exit_status(&text.to_string()).as_bytes())?;
    }
    if top {
        page.write_all(files().as_bytes())?;
    }
    page.write_all(see_also(top).as_bytes())?;
    Ok(page)
}

/// The page date: `SOURCE_DATE_EPOCH` (reproducible builds) or today, as
/// `YYYY-MM-DD`.
fn date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The `Exit status:` text of `after_help` as roff: the `  N  meaning`
/// lines become a tagged list, the rest paragraphs.
fn exit_status(text: &str) -> String {
    let mut out = String::from(".SH \"EXIT STATUS\"\n");
    let mut in_list = false;
    let mut para = false;
    for line in text.lines() {
        if line.trim_end() == "Exit status:" || line.trim().is_empty() {
            continue;
        }
        let entry = line.strip_prefix("  ").and_then(|rest| {
            let (code, meaning) = rest.split_once("  ")?;
            code.chars()
                .all(|c| c.is_ascii_digit())
                .then_some((code, meaning))
        });
        match entry {
            Some((code, meaning)) => {
                out.push_str(&format!(".TP\n.B {code}\n{}\n", escape(meaning.trim())));
                in_list = true;
            }
            None => {
                if in_list || !para {
                    out.push_str(".PP\n");
                    in_list = false;
                    para = true;
                }
                out.push_str(&escape(line.trim()));
                out.push('\n');
            }
        }
    }
    out
}

/// Escape text for a roff text line: backslashes, and a leading `.` or `'`
/// that would read as a request. Backquotes become quotes.
fn escape(line: &str) -> String {
    let body = line
        .replace('\\', "\\e")
        .replace('-', "\\-")
        .replace('`', "'");
    if body.starts_with('.') || body.starts_with('\'') {
        format!("\\&{body}")
    } else {
        body
    }
}

fn see_also(top: bool) -> String {
    let mut refs: Vec<String> = Vec::new();
    if !top {
        refs.push("spoollock(1)".into());
    }
    refs.push("spoollock\\-helper(8)".into());
    refs.extend(
        ["dotlockfile(1)", "lockfile(1)", "fcntl(2)"]
            .iter()
            .map(|s| s.to_string()),
    );
    let list = refs
        .iter()
        .map(|r| {
            let (name, section) = r.split_once('(').unwrap();
            format!(".BR {name} ({section}")
        })
        .collect::<Vec<_>>()
        .join(",\n");
    format!(".SH \"SEE ALSO\"\n{list}\n")
}

const DESCRIPTION_MORE: &str = r#".PP
The lock on a file \fIPATH\fR is the file \fIPATH\fB.lock\fR, made with the
NFS\-safe temporary file, \fBlink\fR(2) and identity check algorithm; a
lock holds the holder's pid, host, boot id and process start time, so a lock
whose holder is gone is recognized as stale at once on the same host, and by
age (\fB\-\-stale\-age\fR, default 300 seconds, judged by the file system's
clock) everywhere else.
\fBrun\fR and \fBdeliver\fR also take an \fBfcntl\fR(2) lock on the mailbox
itself, as mail delivery agents do.
.PP
When the directory holding the lock is a mail spool that only group
\fBmail\fR may write (Debian's \fI/var/mail\fR, \fBroot:mail 2775\fR),
\fBspoollock\fR does not need to be privileged: it asks the setgid helper
\fBspoollock\-helper\fR(8) to create and remove \fI/var/mail/LOGIN\fB.lock\fR
for the calling user, and the helper records every grant, release and
refusal in syslog.
"#;

/// FILES and ENVIRONMENT, with the helper's path and group as compiled in.
fn files() -> String {
    let roff = |s: &str| s.replace('-', "\\-");
    format!(
        r#".SH FILES
.TP
.I /var/mail/LOGIN
The spool mailbox locked by \fB\-\-mailbox\fR (\fI/var/spool/mail/LOGIN\fR
when \fI/var/mail\fR does not exist).
.TP
.I {helper}
The setgid\-\fB{group}\fR helper used for spools only group \fB{group}\fR may write.
.SH ENVIRONMENT
.TP
.B MAIL
Used by \fB\-\-mailbox\fR when it is an absolute path whose file name is your login.
.TP
.B {env}
Another helper program to run (development and tests); ignored when
\fBspoollock\fR runs with elevated privileges.
"#,
        helper = roff(paths::HELPER_PATH),
        group = roff(paths::HELPER_GROUP),
        env = roff(spoollock::privileged::HELPER_ENV),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_is_a_tagged_list() {
        let roff = exit_status("Exit status:\n  0  ok\n  3  busy\n`run` exits with -1.\nmore\n");
        assert_eq!(
            roff,
            ".SH \"EXIT STATUS\"\n.TP\n.B 0\nok\n.TP\n.B 3\nbusy\n.PP\n\\&'run' exits with \\-1.\nmore\n"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn escapes_requests_and_backslashes() {
        assert_eq!(escape(".x \\y"), "\\&.x \\ey");
    }

    #[test]
    fn every_subcommand_gets_a_page() {
        let dir = std::env::temp_dir().join(format!("spoollock-mangen-{}", std::process::id()));
        let written = generate(&dir).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let cmd = cli::Cli::command();
        assert_eq!(names.len(), 1 + cmd.get_subcommands().count());
        assert_eq!(names[0], "spoollock.1");
        for sub in cmd.get_subcommands() {
            let page = std::fs::read_to_string(dir.join(format!("spoollock-{}.1", sub.get_name())))
                .unwrap();
            assert!(page.contains("\n.TH spoollock-"), "{page}");
            assert!(page.contains(".SH \"EXIT STATUS\""), "{page}");
            for arg in sub.get_arguments().filter_map(|a| a.get_long()) {
                assert!(
                    page.contains(&format!("\\-\\-{}", arg.replace('-', "\\-"))),
                    "spoollock-{} page lacks --{arg}",
                    sub.get_name()
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
