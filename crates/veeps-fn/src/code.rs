//! Function code, kept content-addressed: a directory or a zip on the server's machine is
//! copied (or unpacked) once into `functions/code/HASH`, read-only thereafter, so what runs
//! is what was applied even when the source changes later. Unpacking refuses paths that
//! leave the directory, links, and packages past Lambda's size limits.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Most bytes of a package unpacked (Lambda's 250 MB).
pub const MAX_UNPACKED: u64 = 250 * 1024 * 1024;
/// Most files in a package.
pub const MAX_FILES: usize = 20_000;

/// A package ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    /// Lambda's `CodeSha256`: base64 of the SHA-256 of the zip, or of a directory's files.
    pub sha256: String,
    /// Bytes (the zip's, or the files' total).
    pub size: u64,
}

/// The directory name of a package in the code store.
pub fn dir_name(sha256_b64: &str) -> String {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(sha256_b64)
        .unwrap_or_default();
    hex::encode(raw)
}

fn b64(d: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(d)
}

/// A file of the package: its path inside, whether executable, and its bytes.
type Entry = (String, bool, Vec<u8>);

fn walk(root: &Path, dir: &Path, out: &mut Vec<Entry>, total: &mut u64) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let meta = std::fs::metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.is_dir() {
            walk(root, &p, out, total)?;
        } else if meta.is_file() {
            *total += meta.len();
            if *total > MAX_UNPACKED || out.len() >= MAX_FILES {
                return Err(format!(
                    "the code is larger than {} MB or {MAX_FILES} files",
                    MAX_UNPACKED >> 20
                ));
            }
            let rel = p
                .strip_prefix(root)
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .to_string();
            let data = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            out.push((rel, meta.permissions().mode() & 0o111 != 0, data));
        }
    }
    Ok(())
}

fn safe_rel(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn unzip(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("the code is not a zip file: {e}"))?;
    if z.len() > MAX_FILES {
        return Err(format!("the zip holds more than {MAX_FILES} files"));
    }
    let mut out = vec![];
    let mut total = 0u64;
    for i in 0..z.len() {
        let mut f = z.by_index(i).map_err(|e| format!("the zip: {e}"))?;
        if f.is_dir() {
            continue;
        }
        let name = f.name().to_string();
        if f.is_symlink() {
            return Err(format!("the zip's {name} is a link; give the file itself"));
        }
        let rel = safe_rel(&name)
            .ok_or_else(|| format!("the zip's {name} would be written outside the code"))?;
        let exec = f.unix_mode().is_some_and(|m| m & 0o111 != 0);
        let mut data = vec![];
        let room = MAX_UNPACKED.saturating_sub(total);
        (&mut f)
            .take(room + 1)
            .read_to_end(&mut data)
            .map_err(|e| format!("the zip's {name}: {e}"))?;
        total += data.len() as u64;
        if total > MAX_UNPACKED {
            return Err(format!(
                "the code unpacks to more than {} MB",
                MAX_UNPACKED >> 20
            ));
        }
        out.push((rel.to_string_lossy().to_string(), exec, data));
    }
    Ok(out)
}

/// What the code at `source` is, without storing it.
pub fn identify(source: &Path) -> Result<Package, String> {
    load(source).map(|(_, p)| p)
}

fn load(source: &Path) -> Result<(Vec<Entry>, Package), String> {
    let meta = std::fs::metadata(source).map_err(|e| format!("code {}: {e}", source.display()))?;
    let (entries, sha, size) = if meta.is_dir() {
        let mut entries = vec![];
        let mut total = 0;
        walk(source, source, &mut entries, &mut total)?;
        let mut h = Sha256::new();
        for (name, exec, data) in &entries {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update([*exec as u8]);
            h.update((data.len() as u64).to_le_bytes());
            h.update(data);
        }
        (entries, b64(&h.finalize()), total)
    } else {
        if meta.len() > MAX_UNPACKED {
            return Err(format!("code {}: larger than 250 MB", source.display()));
        }
        let bytes = std::fs::read(source).map_err(|e| format!("code {}: {e}", source.display()))?;
        let entries = unzip(&bytes)?;
        (entries, b64(&Sha256::digest(&bytes)), bytes.len() as u64)
    };
    Ok((entries, Package { sha256: sha, size }))
}

/// Stores the code at `source` (a directory, or a zip file) in `store` and says what it
/// is. Idempotent: the same content is stored once.
pub fn store(source: &Path, store: &Path) -> Result<Package, String> {
    let (entries, pkg) = load(source)?;
    let dir = store.join(dir_name(&pkg.sha256));
    if !dir.is_dir() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(store).map_err(|e| e.to_string())?;
        let tmp = store.join(format!(".tmp-{}", hex::encode(rand::random::<[u8; 8]>())));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&tmp)?;
            for (name, exec, data) in &entries {
                let p = tmp.join(name);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&p, data)?;
                let mode = if *exec { 0o555 } else { 0o444 };
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
            }
            // Directories are readable and passable by the function's user, writable by
            // no one but root.
            set_dirs(&tmp)?;
            std::fs::rename(&tmp, &dir)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_dir_all(&tmp);
            // Another apply may have stored the same content meanwhile.
            if !dir.is_dir() {
                return Err(format!("storing the code: {e}"));
            }
        }
    }
    Ok(pkg)
}

fn set_dirs(d: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
    for e in std::fs::read_dir(d)? {
        let p = e?.path();
        if p.is_dir() {
            set_dirs(&p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(vec![]));
        for (name, data, mode) in files {
            let o = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
            w.start_file(*name, o).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn directories_and_zips_are_stored_once_and_escapes_are_refused() {
        let src = tempfile::tempdir().unwrap();
        let st = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("lib")).unwrap();
        std::fs::write(src.path().join("bootstrap"), b"#!/bin/sh\n").unwrap();
        std::fs::write(src.path().join("lib/x.py"), b"x = 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            src.path().join("bootstrap"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let a = store(src.path(), st.path()).unwrap();
        assert_eq!(a, store(src.path(), st.path()).unwrap());
        let dir = st.path().join(dir_name(&a.sha256));
        let mode = std::fs::metadata(dir.join("bootstrap"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o555);
        assert_eq!(std::fs::read(dir.join("lib/x.py")).unwrap(), b"x = 1\n");
        std::fs::write(src.path().join("lib/x.py"), b"x = 2\n").unwrap();
        assert_ne!(a.sha256, store(src.path(), st.path()).unwrap().sha256);

        let z = src.path().join("code.zip");
        std::fs::write(&z, zip_of(&[("app.py", b"def h(e, c): return e\n", 0o644)])).unwrap();
        let p = store(&z, st.path()).unwrap();
        assert_eq!(
            std::fs::read(st.path().join(dir_name(&p.sha256)).join("app.py")).unwrap(),
            b"def h(e, c): return e\n"
        );
        for bad in ["../evil", "/etc/evil", "a/../../evil"] {
            std::fs::write(&z, zip_of(&[(bad, b"x", 0o644)])).unwrap();
            assert!(store(&z, st.path()).is_err(), "{bad}");
        }
        std::fs::write(&z, b"not a zip").unwrap();
        assert!(store(&z, st.path()).unwrap_err().contains("not a zip"));
        assert!(store(&src.path().join("missing"), st.path()).is_err());
    }
}
