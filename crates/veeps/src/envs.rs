//! Finding environments on disk and ordering them by the outputs they read from each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use veeps_lang::config::{load_config, Bundle};
use veeps_lang::eval::{eval, EmptyScope};
use veeps_lang::Diagnostics;

/// One environment loaded from disk.
pub struct LoadedEnv {
    /// Its name.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its configuration.
    pub bundle: Bundle,
    /// Environments whose outputs it reads.
    pub reads: BTreeSet<String>,
}

/// Loads the environment in `dir`.
pub fn load_env(dir: &Path) -> Result<LoadedEnv, Diagnostics> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let bundle = veeps_lang::loader::load_bundle(dir, &veeps_lang::loader::default_git_cache())?;
    let name = veeps_lang::config::environment_name(&bundle)?;
    let mut reads = BTreeSet::new();
    // Which environments it reads, from `data "environment"` blocks with a literal name.
    if let Ok(config) = load_config(Arc::new(bundle.clone())) {
        for m in config.modules.values() {
            for d in m.data.values().filter(|d| d.type_name == "environment") {
                if let Some(a) = d.body.attrs.get("name") {
                    if let Ok(v) = eval(&a.expr, &EmptyScope) {
                        if let Some(s) = v.as_str() {
                            reads.insert(s.to_string());
                        }
                    }
                }
            }
        }
    }
    Ok(LoadedEnv {
        name,
        dir: dir.to_path_buf(),
        bundle,
        reads,
    })
}

/// Loads every environment under `dir` (or `dir` itself), in dependency order: an
/// environment comes after those whose outputs it reads.
pub fn load_tree(dir: &Path) -> Result<Vec<LoadedEnv>, String> {
    if !dir.exists() {
        return Err(format!("{} does not exist", dir.display()));
    }
    let dirs = veeps_lang::loader::find_environments(dir);
    if dirs.is_empty() {
        return Err(format!(
            "no configuration files (*.hcl) in {} or its sub-directories",
            dir.display()
        ));
    }
    let mut envs = vec![];
    let mut errors = vec![];
    for d in dirs {
        match load_env(&d) {
            Ok(e) => envs.push(e),
            Err(diags) => errors.push(diags.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n\n"));
    }
    let mut seen = BTreeMap::new();
    for e in &envs {
        if let Some(prev) = seen.insert(e.name.clone(), e.dir.clone()) {
            return Err(format!(
                "environment \"{}\" is defined twice: in {} and {}",
                e.name,
                prev.display(),
                e.dir.display()
            ));
        }
    }
    let mut ordered: Vec<LoadedEnv> = vec![];
    let mut rest = envs;
    while !rest.is_empty() {
        let names: BTreeSet<String> = rest.iter().map(|e| e.name.clone()).collect();
        let (ready, wait): (Vec<LoadedEnv>, Vec<LoadedEnv>) = rest
            .into_iter()
            .partition(|e| e.reads.iter().all(|r| !names.contains(r) || r == &e.name));
        if ready.is_empty() {
            let cycle: Vec<String> = wait
                .iter()
                .map(|e| {
                    format!(
                        "{} reads {}",
                        e.name,
                        e.reads.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                })
                .collect();
            return Err(format!(
                "environments read each other's outputs in a cycle: {}",
                cycle.join("; ")
            ));
        }
        ordered.extend(ready);
        rest = wait;
    }
    Ok(ordered)
}
