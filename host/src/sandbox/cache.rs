//! Compiled-artifact cache. Cranelift takes seconds per Python or JS component; loading a
//! cached artifact takes about a millisecond. Artifacts are keyed by the component's content
//! hash and the engine's compatibility hash (wasmtime version plus every setting that changes
//! generated code, such as fuel and epoch instrumentation).
//!
//! Beside them, the compiled forms of plain sources that a language runtime's `load` returns
//! (Python's marshalled code objects), keyed by the runtime's content hash and the source's
//! file name and text: compiling is most of a Python sensor's start.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    engine_hash: String,
}

impl ArtifactCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self { dir, engine_hash: format!("{:016x}", hasher.finish()) }
    }

    /// Loads `path` as a component, with its content hash: from the cache when an artifact
    /// exists, else compiled and stored. The file is read and hashed only when its index entry is
    /// missing or stale.
    pub fn load(&self, engine: &Engine, path: &Path) -> Result<(Component, String), CacheMiss> {
        let index = self.index_path(path);
        if let Some(hash) = index.as_ref().and_then(|p| std::fs::read_to_string(p).ok())
            && let Some(component) = self.deserialize(engine, hash.trim())
        {
            return Ok((component, hash.trim().to_string()));
        }
        let bytes = std::fs::read(path).map_err(CacheMiss::Read)?;
        let hash = hex::encode(Sha256::digest(&bytes));
        let component = match self.deserialize(engine, &hash) {
            Some(component) => component,
            None => self.compile(engine, path, &bytes, &hash)?,
        };
        if let Some(index) = index {
            // The index only saves re-hashing the file next time; failing to write it is harmless.
            let _ = write_atomic(&index, hash.as_bytes());
        }
        Ok((component, hash))
    }

    /// The compiled form of `source` named `filename` that the runtime with content hash
    /// `runtime` returned earlier, if kept.
    pub fn compiled_source(&self, runtime: &str, filename: &str, source: &str) -> Option<Vec<u8>> {
        std::fs::read(self.compiled_source_path(runtime, filename, source)).ok()
    }

    /// Keeps what the runtime's `load` returned for `source`; a failure only costs a compile later.
    pub fn keep_compiled_source(&self, runtime: &str, filename: &str, source: &str, compiled: &[u8]) {
        let path = self.compiled_source_path(runtime, filename, source);
        if let Err(e) =
            path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| write_atomic(&path, compiled))
        {
            tracing::warn!(path = %path.display(), "cannot keep a compiled source: {e}");
        }
    }

    fn compiled_source_path(&self, runtime: &str, filename: &str, source: &str) -> PathBuf {
        let key = Sha256::new().chain_update(filename).chain_update([0]).chain_update(source).finalize();
        self.dir.join("sources").join(format!("{runtime}-{}.bin", hex::encode(key)))
    }

    fn artifact_path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}-{}.cwasm", self.engine_hash))
    }

    /// Index entry for a file, keyed by where it is and its size and modification time.
    fn index_path(&self, path: &Path) -> Option<PathBuf> {
        let canonical = path.canonicalize().ok()?;
        let meta = std::fs::metadata(&canonical).ok()?;
        let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?.as_nanos();
        let key = format!("{}\0{}\0{mtime}", canonical.display(), meta.len());
        Some(self.dir.join("by-file").join(hex::encode(Sha256::digest(key.as_bytes()))))
    }

    fn deserialize(&self, engine: &Engine, hash: &str) -> Option<Component> {
        let artifact = self.artifact_path(hash);
        if !artifact.exists() {
            return None;
        }
        // SAFETY: artifacts are written only by `compile` below, into a directory owned by the
        // host, under a name that includes the engine's compatibility hash; wasmtime still checks
        // the header and refuses artifacts of another version or configuration.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(engine, &artifact) };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(artifact = %artifact.display(), "ignoring unusable cached artifact: {e}");
                None
            }
        }
    }

    fn compile(&self, engine: &Engine, path: &Path, bytes: &[u8], hash: &str) -> Result<Component, CacheMiss> {
        let started = Instant::now();
        tracing::info!(
            component = %path.display(),
            size_mib = format!("{:.1}", bytes.len() as f64 / (1 << 20) as f64),
            "compiling component (first use only; the artifact is cached)"
        );
        let component = Component::new(engine, bytes).map_err(|e| CacheMiss::Compile(format!("{e:#}")))?;
        tracing::info!(component = %path.display(), seconds = format!("{:.1}", started.elapsed().as_secs_f64()), "compiled");
        match component.serialize() {
            Ok(artifact) => {
                if let Err(e) = std::fs::create_dir_all(self.dir.join("by-file"))
                    .and_then(|()| write_atomic(&self.artifact_path(hash), &artifact))
                {
                    tracing::warn!(dir = %self.dir.display(), "cannot write compiled artifact cache: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot serialize compiled component: {e}"),
        }
        Ok(component)
    }
}

#[derive(Debug)]
pub enum CacheMiss {
    Read(std::io::Error),
    Compile(String),
}

/// Writes through a temporary file and a rename, so a concurrent reader (another test, another
/// host) never sees half an artifact.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
