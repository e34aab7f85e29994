//! What a sensor may reach beyond its own memory. Both policies fail closed: an empty list
//! grants nothing, and they are parsed once, when the sensor is loaded.
//!
//! | `capabilities.http` entry | allows                                      |
//! |---------------------------|---------------------------------------------|
//! | `api.example.com`         | that host, any port, `http` and `https`     |
//! | `api.example.com:8443`    | that host on that port only                 |
//! | `*.example.com`           | every subdomain of `example.com` (not itself)|
//! | `127.0.0.1`, `[::1]:8080` | IP literals, optionally with a port         |
//!
//! ```
//! use attune_host::capabilities::AllowedHosts;
//! let hosts = AllowedHosts::parse(&["*.example.com", "127.0.0.1:8080"]).unwrap();
//! assert!(hosts.allows("api.example.com", 443));
//! assert!(!hosts.allows("example.com", 443));
//! assert!(hosts.allows("127.0.0.1", 8080));
//! assert!(!hosts.allows("127.0.0.1", 9090));
//! assert_eq!(hosts.to_string(), "*.example.com, 127.0.0.1:8080");
//! assert!(!AllowedHosts::default().allows("example.com", 80));
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    /// Lower-case host name or IP literal, without brackets; for wildcards, the suffix after `*.`.
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl HostPattern {
    fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim().to_ascii_lowercase();
        if entry.is_empty() {
            return Err("empty host".into());
        }
        if entry.contains("://") || entry.contains('/') {
            return Err(format!("`{entry}`: give a host name, not a URL"));
        }
        let (host, port) = split_host_port(&entry)?;
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (host, false),
        };
        if host.is_empty() || host.contains('*') {
            return Err(format!("`{entry}`: `*` is only allowed as a leading `*.`"));
        }
        Ok(Self { host: host.to_string(), wildcard, port })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        let host_ok = if self.wildcard {
            host.strip_suffix(&self.host).is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1)
        } else {
            host == self.host
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

fn split_host_port(entry: &str) -> Result<(&str, Option<u16>), String> {
    let bad_port = |p: &str| format!("`{entry}`: bad port `{p}`");
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(|| format!("`{entry}`: unclosed `[`"))?;
        return match tail.strip_prefix(':') {
            Some(p) => Ok((host, Some(p.parse().map_err(|_| bad_port(p))?))),
            None if tail.is_empty() => Ok((host, None)),
            None => Err(format!("`{entry}`: unexpected `{tail}`")),
        };
    }
    match entry.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => Ok((entry, None)),
        Some((host, p)) => Ok((host, Some(p.parse().map_err(|_| bad_port(p))?))),
        None => Ok((entry, None)),
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let star = if self.wildcard { "*." } else { "" };
        match self.port {
            Some(port) => write!(f, "{star}{host}:{port}"),
            None => write!(f, "{star}{host}"),
        }
    }
}

/// Hosts a sensor may send HTTP requests to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<HostPattern>);

impl AllowedHosts {
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries.iter().map(|e| HostPattern::parse(e.as_ref())).collect::<Result<_, _>>().map(Self)
    }

    /// Whether a request to `host:port` is allowed. `host` may carry IPv6 brackets.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        self.0.iter().any(|p| p.matches(&host, port))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// These hosts plus `other`'s.
    pub fn with(&self, other: &AllowedHosts) -> Self {
        Self(self.0.iter().chain(&other.0).cloned().collect())
    }
}

impl fmt::Display for AllowedHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Directories a sensor may read (never write). Stored canonicalized, so `..` and symlinks in a
/// requested path cannot lead outside them. A relative path from the sensor is taken relative to
/// `base` (the pack directory), the same way the manifest's own entries are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantedPaths {
    dirs: Vec<PathBuf>,
    base: PathBuf,
}

impl GrantedPaths {
    /// Canonicalizes each directory; relative ones are taken relative to `base`.
    pub fn resolve<P: AsRef<Path>>(dirs: &[P], base: &Path) -> Result<Self, String> {
        let dirs = dirs
            .iter()
            .map(|dir| {
                let dir = base.join(dir.as_ref());
                let canonical = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
                if !canonical.is_dir() {
                    return Err(format!("{}: not a directory", dir.display()));
                }
                Ok(canonical)
            })
            .collect::<Result<_, _>>()?;
        // Absolute, so a relative path from the sensor resolves the same whatever the working directory.
        let base = base.canonicalize().unwrap_or_else(|_| base.to_path_buf());
        Ok(Self { dirs, base })
    }

    /// These grants plus `other`'s directories (relative paths still resolve against `self`'s base).
    pub fn with(&self, other: &GrantedPaths) -> Self {
        let mut dirs = self.dirs.clone();
        dirs.extend(other.dirs.iter().cloned());
        Self { dirs, base: self.base.clone() }
    }

    /// The canonical form of `path` if it lies inside a granted directory.
    pub fn check(&self, path: &str) -> Result<PathBuf, String> {
        let requested = self.base.join(path);
        if !requested.is_absolute() {
            return Err(format!("{path}: path must be absolute"));
        }
        let canonical = requested.canonicalize().map_err(|e| format!("{path}: {e}"))?;
        if self.dirs.iter().any(|dir| canonical.starts_with(dir)) {
            Ok(canonical)
        } else {
            Err(format!("{path}: access denied (not under a granted path)"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_urls_and_inner_wildcards() {
        assert!(AllowedHosts::parse(&["http://example.com"]).is_err());
        assert!(AllowedHosts::parse(&["a.*.com"]).is_err());
        assert!(AllowedHosts::parse(&["example.com:http"]).is_err());
    }

    #[test]
    fn ipv6_round_trips() {
        let hosts = AllowedHosts::parse(&["[::1]:8080", "::1"]).unwrap();
        assert!(hosts.allows("[::1]", 8080));
        assert_eq!(hosts.to_string(), "[::1]:8080, [::1]");
    }

    #[test]
    fn paths_outside_grants_are_refused() {
        let granted = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        std::fs::write(granted.path().join("a.txt"), "a").unwrap();
        std::fs::write(other.path().join("b.txt"), "b").unwrap();
        let paths = GrantedPaths::resolve(&[granted.path()], Path::new("/")).unwrap();
        let inside = granted.path().join("a.txt");
        assert!(paths.check(inside.to_str().unwrap()).is_ok());
        let escape = granted.path().join("..").join(other.path().file_name().unwrap()).join("b.txt");
        assert!(paths.check(escape.to_str().unwrap()).is_err());
        assert!(paths.check("relative.txt").is_err(), "no such file under base /");
        let based = GrantedPaths::resolve(&[granted.path()], granted.path()).unwrap();
        assert_eq!(based.check("a.txt").unwrap(), inside.canonicalize().unwrap());
        assert!(GrantedPaths::default().check(inside.to_str().unwrap()).is_err());
    }
}
