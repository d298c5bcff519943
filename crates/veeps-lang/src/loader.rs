//! Building a [`Bundle`] from disk: an environment's directory, its local modules, and git
//! modules cloned at a tag into a cache.

use crate::config::{join_path, normalize_path, parse_file, Bundle, ModuleSource};
use crate::diag::{Diagnostic, Diagnostics, Loc, SourceFile};
use crate::eval::Expr;
use hcl_edit::structure::Structure;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Files larger than this are left out of bundles (`file()` on them fails clearly).
pub const MAX_FILE: u64 = 4 << 20;
/// The largest bundle accepted.
pub const MAX_BUNDLE: usize = 64 << 20;

/// Where git modules are cloned.
pub fn default_git_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("veeps").join("modules")
}

/// Loads the environment in `dir` and every module it calls into a bundle.
pub fn load_bundle(dir: &Path, git_cache: &Path) -> Result<Bundle, Diagnostics> {
    let root = normalize_path(&dir.to_string_lossy());
    let mut b = Bundle {
        root: root.clone(),
        client: crate::config::Client {
            cwd: std::env::current_dir()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default(),
            home: std::env::var("HOME").unwrap_or_default(),
        },
        files: Default::default(),
    };
    let mut loaded: BTreeSet<String> = BTreeSet::new();
    let mut size = 0usize;
    let mut todo: Vec<(String, Option<Loc>)> = vec![(root, None)];
    let mut git_done: HashMap<String, ()> = HashMap::new();
    let mut diags = Diagnostics::default();
    while let Some((mdir, at)) = todo.pop() {
        if !loaded.insert(mdir.clone()) {
            continue;
        }
        if !mdir.starts_with("git::") {
            let p = Path::new(&mdir);
            if !p.is_dir() {
                diags.push(Diagnostic::new(
                    format!("module directory \"{mdir}\" does not exist"),
                    at,
                ));
                continue;
            }
            add_tree(&mut b, p, &mdir, &mut size, false).map_err(|e| Diagnostic::new(e, None))?;
        }
        for (src, loc) in module_sources(&b, &mdir) {
            match ModuleSource::parse(&mdir, &src) {
                Ok(ms @ ModuleSource::Git { .. }) => {
                    let root_key = ms.git_root().unwrap_or_default();
                    if git_done.insert(root_key.clone(), ()).is_none() {
                        let ModuleSource::Git { url, rref, .. } = &ms else {
                            unreachable!()
                        };
                        match fetch_git(url, rref, git_cache) {
                            Ok(path) => add_tree(&mut b, &path, &root_key, &mut size, true)
                                .map_err(|e| Diagnostic::at(&loc, e))?,
                            Err(e) => {
                                diags.push(Diagnostic::at(&loc, e));
                                continue;
                            }
                        }
                    }
                    todo.push((ms.dir(), Some(loc)));
                }
                Ok(ModuleSource::Local(d)) => {
                    // A relative path inside a git module stays inside its clone.
                    todo.push((
                        if mdir.starts_with("git::") {
                            join_path(&mdir, &src)
                        } else {
                            d
                        },
                        Some(loc),
                    ))
                }
                Err(_) => {} // reported when the configuration is parsed
            }
        }
    }
    diags.into_result()?;
    Ok(b)
}

fn module_sources(b: &Bundle, dir: &str) -> Vec<(String, Loc)> {
    let mut out = vec![];
    for (path, text) in b.config_files(dir) {
        let file = Arc::new(SourceFile {
            path: path.clone(),
            text: text.clone(),
        });
        let Ok(body) = parse_file(&file) else {
            continue;
        };
        for s in body.iter() {
            if let Structure::Block(blk) = s {
                if blk.ident.as_str() != "module" {
                    continue;
                }
                if let Some(a) = blk.body.get_attribute("source") {
                    let e = Expr {
                        expr: a.value.clone(),
                        file: file.clone(),
                    };
                    if let Some(s) = a.value.as_str() {
                        out.push((s.to_string(), e.loc()));
                    }
                }
            }
        }
    }
    out
}

fn add_tree(
    b: &mut Bundle,
    fs_dir: &Path,
    key_dir: &str,
    size: &mut usize,
    recursive_all: bool,
) -> Result<(), String> {
    let mut stack = vec![(fs_dir.to_path_buf(), key_dir.to_string(), 0usize)];
    while let Some((dir, key, depth)) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| format!("cannot read directory {}: {e}", dir.display()))?;
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            let child_key = if key == "." {
                name.clone()
            } else {
                format!("{key}/{name}")
            };
            if ft.is_dir() {
                // Sub-directories hold templates and files for `file()`; another environment
                // (a directory with its own configuration) is not part of this one.
                if depth < 8 && (recursive_all || !has_config_files(&e.path())) {
                    stack.push((e.path(), child_key, depth + 1));
                }
            } else if ft.is_file() {
                let Ok(meta) = e.metadata() else { continue };
                if meta.len() > MAX_FILE {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(e.path()) else {
                    continue;
                };
                *size += text.len();
                if *size > MAX_BUNDLE {
                    return Err(format!("the configuration in {} is larger than {} MiB; keep large files out of module directories", fs_dir.display(), MAX_BUNDLE >> 20));
                }
                b.files.insert(child_key, text);
            }
        }
    }
    Ok(())
}

fn has_config_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .any(|e| crate::config::is_config_file(&e.file_name().to_string_lossy()))
        })
        .unwrap_or(false)
}

/// Clones `url` at `rref` into the cache (once) and returns the checkout.
pub fn fetch_git(url: &str, rref: &str, cache: &Path) -> Result<PathBuf, String> {
    use sha2::Digest;
    let id = hex::encode(&sha2::Sha256::digest(format!("{url}\n{rref}").as_bytes())[..12]);
    let dest = cache.join(&id);
    if dest.join(".git").is_dir() {
        return Ok(dest);
    }
    std::fs::create_dir_all(cache)
        .map_err(|e| format!("cannot create module cache {}: {e}", cache.display()))?;
    let tmp = cache.join(format!("{id}.tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = Command::new("git")
        .args([
            "-c",
            "advice.detachedHead=false",
            "clone",
            "--quiet",
            "--depth",
            "1",
            "--branch",
            rref,
            "--",
            url,
        ])
        .arg(&tmp)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| format!("cannot run git to fetch module {url}: {e}"))?;
    if !out.status.success() {
        // Not a tag or branch: try a full clone and check out the ref (a commit).
        let _ = std::fs::remove_dir_all(&tmp);
        let clone = Command::new("git")
            .args(["clone", "--quiet", "--", url])
            .arg(&tmp)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output();
        let ok = matches!(&clone, Ok(o) if o.status.success())
            && Command::new("git")
                .arg("-C")
                .arg(&tmp)
                .args([
                    "-c",
                    "advice.detachedHead=false",
                    "checkout",
                    "--quiet",
                    rref,
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if !ok {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(format!(
                "cannot fetch module from git repository {url} at ref \"{rref}\": {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    std::fs::rename(&tmp, &dest).or_else(|e| {
        if dest.join(".git").is_dir() {
            Ok(())
        } else {
            Err(format!("cannot store module in cache: {e}"))
        }
    })?;
    Ok(dest)
}

/// Finds the environments under `dir`: `dir` itself if it holds configuration files, else
/// each sub-directory (recursively) that does.
pub fn find_environments(dir: &Path) -> Vec<PathBuf> {
    if has_config_files(dir) {
        return vec![dir.to_path_buf()];
    }
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut subs: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    subs.sort();
    for s in subs {
        out.extend(find_environments(&s));
    }
    out
}
