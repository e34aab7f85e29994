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
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use cap_std::fs::{Dir, FileTypeExt, MetadataExt, OpenOptions};

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

/// Directories a sensor may read (never write), each opened once, when the sensor is loaded, as a
/// directory handle (`cap_std::fs::Dir`): the only use of ambient authority. A sensor names files
/// by host path, absolute or relative to `base` (the pack directory), as the manifest names the
/// directories; the path is mapped to a granted handle and the rest of it, which the kernel
/// resolves beneath that handle (`openat2(RESOLVE_BENEATH)`), so no `..` and no symlink, even
/// one swapped in after a check, leads outside. Only regular files are read.
///
/// | granted (manifest)   | sensor asks for          | opened as                       |
/// |----------------------|--------------------------|---------------------------------|
/// | `inbox` (pack `/p`)  | `inbox/a.txt`            | `a.txt` beneath the `inbox` handle |
/// | `inbox` (pack `/p`)  | `/p/inbox/sub/../b.txt`  | `b.txt` beneath it (`..` is taken lexically) |
/// | `inbox` (pack `/p`)  | `/p/inbox/../secret`     | refused: not under a granted path |
/// | `inbox` (pack `/p`)  | `inbox/link/x` (link to `/etc`) | refused by the kernel: leads outside |
#[derive(Clone, Default)]
pub struct GrantedPaths {
    dirs: Vec<GrantedDir>,
    base: PathBuf,
    /// Calls of this sensor still running on a helper thread (see [`GrantedPaths::begin_call`]).
    in_flight: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct GrantedDir {
    /// The absolute paths that name it: as the manifest spells it (with `..` and `.` taken
    /// lexically) and its canonical path.
    names: Vec<PathBuf>,
    /// Device and inode of the directory opened: a reload keeps a sensor whose grants are the
    /// same directories, and restarts it (with fresh handles) when one was replaced.
    identity: (u64, u64),
    handle: Arc<Dir>,
}

impl fmt::Debug for GrantedPaths {
    /// The paths only (a handle's descriptor number would make every load look different).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantedPaths")
            .field("dirs", &self.dirs.iter().map(|d| (&d.names, d.identity)).collect::<Vec<_>>())
            .field("base", &self.base)
            .finish()
    }
}

impl PartialEq for GrantedPaths {
    fn eq(&self, other: &Self) -> bool {
        self.base == other.base
            && self.dirs.len() == other.dirs.len()
            && self.dirs.iter().zip(&other.dirs).all(|(a, b)| (&a.names, a.identity) == (&b.names, b.identity))
    }
}

impl Eq for GrantedPaths {}

/// One entry of [`GrantedPaths::list_dir`] (a symlink is described as itself, not its target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantedEntry {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// Most filesystem calls of one sensor that may still be running: its calls are sequential, so
/// one still running when the next begins outlived its poll's deadline on a stuck filesystem.
const CALLS_IN_FLIGHT_MAX: usize = 1;

/// A filesystem call counted as in flight until dropped.
#[derive(Debug)]
pub struct CallGuard(Arc<AtomicUsize>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl GrantedPaths {
    /// Opens each directory (relative ones are taken relative to `base`) as a handle.
    pub fn resolve<P: AsRef<Path>>(dirs: &[P], base: &Path) -> Result<Self, String> {
        // Absolute, so a relative path from the sensor resolves the same whatever the working directory.
        let canonical_base = base.canonicalize().unwrap_or_else(|_| base.to_path_buf());
        let dirs = dirs
            .iter()
            .map(|dir| {
                let given = base.join(dir.as_ref());
                let canonical = given.canonicalize().map_err(|e| format!("{}: {e}", given.display()))?;
                if !canonical.is_dir() {
                    return Err(format!("{}: not a directory", given.display()));
                }
                let handle = Dir::open_ambient_dir(&canonical, cap_std::ambient_authority())
                    .map_err(|e| format!("{}: {e}", given.display()))?;
                let meta = handle.dir_metadata().map_err(|e| format!("{}: {e}", given.display()))?;
                let identity = (meta.dev(), meta.ino());
                let mut names = vec![canonical];
                for name in [std::path::absolute(&given).ok(), Some(canonical_base.join(dir.as_ref()))] {
                    let name = name.map(|n| normalize(&n));
                    if let Some(name) = name.filter(|n| !names.contains(n)) {
                        names.push(name);
                    }
                }
                Ok(GrantedDir { names, identity, handle: Arc::new(handle) })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { dirs, base: canonical_base, in_flight: Arc::default() })
    }

    /// These grants plus `other`'s directories (relative paths still resolve against `self`'s base).
    pub fn with(&self, other: &GrantedPaths) -> Self {
        let mut dirs = self.dirs.clone();
        dirs.extend(other.dirs.iter().cloned());
        Self { dirs, base: self.base.clone(), in_flight: self.in_flight.clone() }
    }

    /// Counts a call that is about to run on a helper thread; `None` while an earlier call of
    /// this sensor still runs (a stuck filesystem), so such calls do not pile up.
    pub fn begin_call(&self) -> Option<CallGuard> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < CALLS_IN_FLIGHT_MAX).then_some(n + 1))
            .ok()
            .map(|_| CallGuard(self.in_flight.clone()))
    }

    /// The granted handle `path` lies under (the most specific one) and the rest of the path
    /// beneath it, without `.` or `..` (`.` for the granted directory itself).
    fn locate(&self, path: &str) -> Result<(&Dir, PathBuf), String> {
        let requested = self.base.join(path);
        if !requested.is_absolute() {
            return Err(format!("{path}: path must be absolute"));
        }
        let requested = normalize(&requested);
        self.dirs
            .iter()
            .flat_map(|dir| {
                dir.names.iter().filter_map(|name| {
                    let rest = requested.strip_prefix(name).ok()?;
                    Some((name.components().count(), &*dir.handle, rest))
                })
            })
            .max_by_key(|(depth, ..)| *depth)
            .map(|(_, handle, rest)| {
                let rest = if rest.as_os_str().is_empty() { Path::new(".") } else { rest };
                (handle, rest.to_path_buf())
            })
            .ok_or_else(|| format!("{path}: access denied (not under a granted path)"))
    }

    /// The entries of the directory `path`, sorted by name.
    pub fn list_dir(&self, path: &str) -> Result<Vec<GrantedEntry>, String> {
        let (dir, rest) = self.locate(path)?;
        let fail = |e| describe(path, e);
        let mut entries = Vec::new();
        for entry in dir.read_dir(&rest).map_err(fail)? {
            let entry = entry.map_err(fail)?;
            let meta = entry.metadata().map_err(fail)?;
            entries.push(GrantedEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                is_dir: meta.is_dir(),
                size: meta.len(),
                modified: meta.modified().ok().map(|t| t.into_std()),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// The whole of the regular file `path`, at most `cap` bytes (else an error). Anything else
    /// (a FIFO, socket, device or directory) is refused without blocking: its type is checked
    /// before it is opened, it is opened with `O_NONBLOCK`, and the type is checked again on
    /// the opened handle before a byte is read.
    pub fn read_file(&self, path: &str, cap: u64) -> Result<Vec<u8>, String> {
        let (dir, rest) = self.locate(path)?;
        let fail = |e| describe(path, e);
        regular_file(path, &dir.metadata(&rest).map_err(fail)?, cap)?;
        let mut options = OpenOptions::new();
        options.read(true);
        // `O_NONBLOCK`, as cap-fs-ext's `OpenOptionsSyncExt::nonblock` sets it: opening a FIFO
        // swapped in after the check above returns at once instead of waiting for a writer.
        options._cap_fs_ext_nonblock(true);
        let file = dir.open_with(&rest, &options).map_err(fail)?;
        let len = regular_file(path, &file.metadata().map_err(fail)?, cap)?;
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(cap + 1).read_to_end(&mut bytes).map_err(fail)?;
        if bytes.len() as u64 > cap {
            return Err(format!("{path}: more than the read cap of {cap} bytes"));
        }
        Ok(bytes)
    }
}

/// Refuses anything but a regular file of at most `cap` bytes; its length otherwise.
fn regular_file(path: &str, meta: &cap_std::fs::Metadata, cap: u64) -> Result<u64, String> {
    let kind = meta.file_type();
    let what = if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device")
    } else {
        Some("not a file")
    };
    if let Some(what) = what {
        return Err(format!("{path}: not a regular file ({what})"));
    }
    if meta.len() > cap {
        return Err(format!("{path}: {} bytes exceeds the read cap of {cap} bytes", meta.len()));
    }
    Ok(meta.len())
}

/// The error of a call on `path`; leaving the granted directory is named as a refusal.
fn describe(path: &str, error: std::io::Error) -> String {
    match error.kind() {
        // cap-std's "a path led outside of the filesystem" (no OS error): a `..` or symlink
        // beneath the handle pointing out of it.
        std::io::ErrorKind::PermissionDenied if error.raw_os_error().is_none() => {
            format!("{path}: access denied (leads outside the granted path)")
        }
        std::io::ErrorKind::PermissionDenied => format!("{path}: access denied ({error})"),
        _ => format!("{path}: {error}"),
    }
}

/// `path` with `.` dropped and each `..` taking off the component before it, without looking
/// at the filesystem (what is opened is then resolved beneath a granted handle, which a
/// symlink cannot leave).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                }
            }
            other => out.push(other),
        }
    }
    out
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
        assert_eq!(paths.read_file(inside.to_str().unwrap(), 10).unwrap(), b"a");
        let escape = granted.path().join("..").join(other.path().file_name().unwrap()).join("b.txt");
        let error = paths.read_file(escape.to_str().unwrap(), 10).unwrap_err();
        assert!(error.ends_with("access denied (not under a granted path)"), "{error}");
        assert!(paths.read_file("relative.txt", 10).is_err(), "no such file under base /");
        let based = GrantedPaths::resolve(&[granted.path()], granted.path()).unwrap();
        assert_eq!(based.read_file("a.txt", 10).unwrap(), b"a");
        assert_eq!(based.read_file("./sub/../a.txt", 10).unwrap(), b"a");
        assert_eq!(based.list_dir("").unwrap()[0].name, "a.txt");
        assert!(based.read_file("a.txt", 0).unwrap_err().contains("exceeds the read cap of 0 bytes"));
        assert!(based.read_file(".", 10).unwrap_err().ends_with("not a regular file (a directory)"));
        assert!(GrantedPaths::default().read_file(inside.to_str().unwrap(), 10).is_err());
        assert!(GrantedPaths::default().read_file("a.txt", 10).unwrap_err().contains("must be absolute"));
    }

    #[test]
    fn symlinks_beneath_a_grant_stay_beneath_it() {
        let granted = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        std::fs::write(granted.path().join("a.txt"), "a").unwrap();
        std::fs::write(other.path().join("b.txt"), "b").unwrap();
        std::os::unix::fs::symlink("a.txt", granted.path().join("alias")).unwrap();
        std::os::unix::fs::symlink(other.path(), granted.path().join("out")).unwrap();
        let paths = GrantedPaths::resolve(&[granted.path()], granted.path()).unwrap();
        assert_eq!(paths.read_file("alias", 10).unwrap(), b"a");
        let error = paths.read_file("out/b.txt", 10).unwrap_err();
        assert_eq!(error, "out/b.txt: access denied (leads outside the granted path)");
        assert!(paths.list_dir("out").unwrap_err().contains("access denied"));
        // Listed as what they are: symlinks, not their targets.
        let names: Vec<_> = paths.list_dir(".").unwrap().into_iter().map(|e| (e.name, e.is_dir)).collect();
        assert_eq!(names, [("a.txt".into(), false), ("alias".into(), false), ("out".into(), false)]);
    }

    #[test]
    fn the_debug_form_names_paths_not_handles() {
        let granted = tempfile::tempdir().unwrap();
        let a = GrantedPaths::resolve(&[granted.path()], Path::new("/")).unwrap();
        let b = GrantedPaths::resolve(&[granted.path()], Path::new("/")).unwrap();
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(a, b);
        // The same path, another directory: not the same grant.
        std::fs::rename(granted.path(), granted.path().with_extension("old")).unwrap();
        std::fs::create_dir(granted.path()).unwrap();
        let c = GrantedPaths::resolve(&[granted.path()], Path::new("/")).unwrap();
        assert_ne!(a, c);
        std::fs::remove_dir(granted.path()).unwrap();
        std::fs::rename(granted.path().with_extension("old"), granted.path()).unwrap();
    }

    #[test]
    fn a_stuck_call_holds_back_the_next() {
        let paths = GrantedPaths::default();
        let first = paths.begin_call().unwrap();
        assert!(paths.begin_call().is_none());
        drop(first);
        assert!(paths.begin_call().is_some());
    }
}
