//! The spool list: the built-in spools plus those named in the optional
//! root-owned configuration file at the build-time path
//! [`spoollock_protocol::paths::CONFIG_PATH`].
//!
//! Format: one directive per line; blank lines and lines starting with `#`
//! are ignored.
//!
//! ```text
//! # /etc/spoollock/helper.conf
//! spool /srv/mail
//! ```
//!
//! The file must be a regular file owned by root and writable by no one
//! else, reached through root-owned directories writable by no one else;
//! otherwise the helper refuses to run (a configuration it cannot trust is
//! never silently ignored). A missing file means "built-in spools only".

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use spoollock_protocol::paths::{BUILTIN_SPOOLS, CONFIG_PATH};
use spoollock_protocol::{ConfigProblem, ConfigSyntax, ConfigUnsafe};

use crate::trusted::{self, WalkError};

/// The largest configuration file read.
pub const MAX_CONFIG: usize = 8192;
/// The most spools the helper knows.
pub const MAX_SPOOLS: usize = 16;

/// Why the configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The file, or a directory above it, is not trusted.
    Unsafe(ConfigUnsafe),
    /// Reading it failed.
    Io(Errno),
    /// A line is not a valid directive (1-based line number).
    Syntax { line: usize, why: ConfigSyntax },
    /// More than [`MAX_SPOOLS`] spools, or a file over [`MAX_CONFIG`] bytes.
    TooLarge,
}

/// Said as the client is told it ([`ConfigProblem`]'s words, one text).
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        ConfigProblem::from(self).fmt(f)
    }
}

/// What the client is told: the same, without the local `errno` type.
impl From<&ConfigError> for ConfigProblem {
    fn from(e: &ConfigError) -> ConfigProblem {
        match *e {
            ConfigError::Unsafe(why) => ConfigProblem::Unsafe(why),
            ConfigError::Io(errno) => ConfigProblem::Io {
                errno: errno as i32,
            },
            ConfigError::Syntax { line, why } => ConfigProblem::Syntax {
                line: u32::try_from(line).unwrap_or(u32::MAX),
                problem: why,
            },
            ConfigError::TooLarge => ConfigProblem::TooLarge,
        }
    }
}

/// The spools, built-in first, in the order requests index them.
pub fn load() -> Result<Vec<String>, ConfigError> {
    let mut spools: Vec<String> = BUILTIN_SPOOLS.iter().map(|s| (*s).to_owned()).collect();
    if let Some(text) = read_config()? {
        for path in parse(&text)? {
            if !spools.contains(&path) {
                spools.push(path);
            }
        }
    }
    if spools.len() > MAX_SPOOLS {
        return Err(ConfigError::TooLarge);
    }
    Ok(spools)
}

fn read_config() -> Result<Option<Vec<u8>>, ConfigError> {
    let (dir, name) = match trusted::open_parent(CONFIG_PATH) {
        Ok(found) => found,
        Err(WalkError::Missing) => return Ok(None),
        Err(WalkError::UnsafeAncestor) => {
            return Err(ConfigError::Unsafe(ConfigUnsafe::UnsafeAncestor))
        }
        Err(WalkError::Symlink) => return Err(ConfigError::Unsafe(ConfigUnsafe::Symlink)),
        Err(WalkError::NotDirectory) => {
            return Err(ConfigError::Unsafe(ConfigUnsafe::NotDirectory))
        }
        Err(WalkError::BadPath) => return Err(ConfigError::Unsafe(ConfigUnsafe::BadPath)),
        Err(WalkError::Io(e)) => return Err(ConfigError::Io(e)),
    };
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd = match openat(&dir, name.as_str(), flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => return Err(ConfigError::Unsafe(ConfigUnsafe::Symlink)),
        Err(e) => return Err(ConfigError::Io(e)),
    };
    let st = fstat(&fd).map_err(ConfigError::Io)?;
    if !trusted::is_kind(&st, SFlag::S_IFREG) {
        return Err(ConfigError::Unsafe(ConfigUnsafe::NotRegular));
    }
    if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
        return Err(ConfigError::Unsafe(ConfigUnsafe::NotRootOwned));
    }
    let mut buf = vec![0u8; MAX_CONFIG + 1];
    let mut len = 0;
    while len < buf.len() {
        match nix::unistd::read(&fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(ConfigError::Io(e)),
        }
    }
    if len > MAX_CONFIG {
        return Err(ConfigError::TooLarge);
    }
    buf.truncate(len);
    Ok(Some(buf))
}

/// Parse the configuration text into spool paths.
pub fn parse(text: &[u8]) -> Result<Vec<String>, ConfigError> {
    let text = std::str::from_utf8(text).map_err(|_| ConfigError::Syntax {
        line: 0,
        why: ConfigSyntax::NotUtf8,
    })?;
    let mut spools = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_ascii_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("spool"), Some(path), None) => {
                if trusted::components(path).is_err() {
                    return Err(ConfigError::Syntax {
                        line: line_no,
                        why: ConfigSyntax::BadSpoolPath,
                    });
                }
                spools.push(path.to_owned());
            }
            (Some("spool"), _, _) => {
                return Err(ConfigError::Syntax {
                    line: line_no,
                    why: ConfigSyntax::ExpectedSpoolPath,
                })
            }
            _ => {
                return Err(ConfigError::Syntax {
                    line: line_no,
                    why: ConfigSyntax::UnknownDirective,
                })
            }
        }
        if spools.len() > MAX_SPOOLS {
            return Err(ConfigError::TooLarge);
        }
    }
    Ok(spools)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spool_lines() {
        let text = b"# comment\n\n  spool /srv/mail \nspool /var/mail\n";
        assert_eq!(parse(text).unwrap(), ["/srv/mail", "/var/mail"]);
    }

    #[test]
    fn refuses_anything_else() {
        for (text, line) in [
            (&b"spool relative/path\n"[..], 1),
            (b"spool /a/../b\n", 1),
            (b"\nspool /a /b\n", 2),
            (b"spool\n", 1),
            (b"include /etc/other\n", 1),
            (b"spool /a\x1b\n", 1),
        ] {
            match parse(text) {
                Err(ConfigError::Syntax { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(parse(b"\xff\n").is_err());
        let many: String = (0..=MAX_SPOOLS).map(|i| format!("spool /s{i}\n")).collect();
        assert_eq!(parse(many.as_bytes()), Err(ConfigError::TooLarge));
    }

    #[test]
    fn the_client_is_told_what_and_where() {
        let e = parse(b"spool /a\ninclude /etc/other\n").unwrap_err();
        let told = ConfigProblem::from(&e);
        assert_eq!(
            told,
            ConfigProblem::Syntax {
                line: 2,
                problem: ConfigSyntax::UnknownDirective
            }
        );
        assert_eq!(told.to_string(), e.to_string());
        let e = ConfigError::Unsafe(ConfigUnsafe::NotRootOwned);
        assert_eq!(ConfigProblem::from(&e).to_string(), e.to_string());
    }
}
