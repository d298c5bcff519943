//! The configuration model: a bundle of files parsed into modules of variables, locals,
//! resources, data sources, outputs and module calls.

use crate::diag::{did_you_mean, Diagnostic, Diagnostics, Loc, SourceFile};
use crate::eval::{eval, EmptyScope, Expr};
use crate::value::{ObjectAttr, Type, Value};
use hcl_edit::expr::{Expression, ObjectKey, TraversalOperator};
use hcl_edit::structure::{Body, Structure};
use hcl_edit::Span;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The files of one configuration: an environment's directory and every module it uses.
///
/// Paths use `/`; a module from git lives under `git::URL?ref=TAG`. The CLI builds the
/// bundle from disk; the server evaluates only what is in it, and history keeps it so any
/// applied version can be planned again.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bundle {
    /// The root module's directory.
    pub root: String,
    /// Every file, by path.
    pub files: BTreeMap<String, String>,
    /// Where the CLI that sent it ran.
    #[serde(default)]
    pub client: Client,
}

/// Facts of the machine and user that ran the CLI, for the functions that depend on them
/// (`abspath`, `pathexpand`): the server never reads its own filesystem for them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Client {
    /// The working directory (absolute).
    pub cwd: String,
    /// The user's home directory.
    pub home: String,
}

impl Bundle {
    /// The configuration files (`*.hcl`, `*.tf`) directly in `dir`, in name order.
    pub fn config_files(&self, dir: &str) -> Vec<(&String, &String)> {
        self.files
            .iter()
            .filter(|(p, _)| parent_dir(p) == dir && is_config_file(p))
            .collect()
    }
}

/// True for `*.hcl` and `*.tf` files.
pub fn is_config_file(p: &str) -> bool {
    p.ends_with(".hcl") || p.ends_with(".tf")
}

/// The directory part of a bundle path.
pub fn parent_dir(p: &str) -> &str {
    match p.rfind('/') {
        Some(i) => &p[..i],
        None => ".",
    }
}

/// Joins a bundle directory and a relative path.
pub fn join_path(dir: &str, rel: &str) -> String {
    if rel.starts_with('/') || rel.starts_with("git::") {
        return normalize_path(rel);
    }
    if dir == "." || dir.is_empty() {
        normalize_path(rel)
    } else {
        normalize_path(&format!("{dir}/{rel}"))
    }
}

/// Resolves `.` and `..` in a path, keeping a `git::URL?ref=TAG` prefix intact.
pub fn normalize_path(p: &str) -> String {
    let (prefix, rest) = split_git_prefix(p);
    let absolute = prefix.is_empty() && rest.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in rest.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if matches!(parts.last(), Some(l) if *l != "..") {
                    parts.pop();
                } else if !absolute && prefix.is_empty() {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    if !prefix.is_empty() {
        if joined.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}/{joined}")
        }
    } else if absolute {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_string()
    } else {
        joined
    }
}

fn split_git_prefix(p: &str) -> (&str, &str) {
    if let Some(rest) = p.strip_prefix("git::") {
        if let Some(i) = rest.find("?ref=") {
            let after = &rest[i + 5..];
            let end = after.find('/').map(|j| 5 + i + 5 + j).unwrap_or(p.len());
            return (&p[..end], &p[end..]);
        }
    }
    ("", p)
}

/// Where a module's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    /// A directory of the bundle.
    Local(String),
    /// A git repository at a tag (or other ref), and a directory inside it.
    Git {
        /// The repository URL.
        url: String,
        /// The tag, branch or commit.
        rref: String,
        /// The directory inside the repository ("" for its root).
        subdir: String,
    },
}

impl ModuleSource {
    /// Parses a `source` string as written in a module block called from `caller_dir`.
    pub fn parse(caller_dir: &str, source: &str) -> Result<ModuleSource, String> {
        if let Some(rest) = source.strip_prefix("git::") {
            let (addr, query) = rest
                .split_once('?')
                .map(|(a, q)| (a, Some(q)))
                .unwrap_or((rest, None));
            let rref = query
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("ref=")))
                .ok_or_else(|| "a git module source must pin a version with \"?ref=TAG\", for example \"git::https://example.com/modules.git//vpc?ref=v1.2.0\"".to_string())?;
            // `//` after the scheme separates the repository from the directory inside it.
            let scheme_end = addr.find("://").map(|i| i + 3).unwrap_or(0);
            let (url, subdir) = match addr[scheme_end..].find("//") {
                Some(i) => (&addr[..scheme_end + i], &addr[scheme_end + i + 2..]),
                None => (addr, ""),
            };
            if url.is_empty() {
                return Err("the git module source has no repository URL".into());
            }
            if url.starts_with('-') || rref.starts_with('-') || url.starts_with("ext::") {
                return Err(format!(
                    "the git module source \"{source}\" has a URL or ref that git would take for an option or a command; give a repository URL and a tag"
                ));
            }
            return Ok(ModuleSource::Git {
                url: url.to_string(),
                rref: rref.to_string(),
                subdir: subdir.trim_matches('/').to_string(),
            });
        }
        if caller_dir.starts_with("git::") && source.starts_with('/') {
            return Err(format!(
                "\"{source}\": a module inside a git module can only name directories of its own repository (a relative path like \"./x\"), not this machine's files"
            ));
        }
        if source.starts_with("./") || source.starts_with("../") || source.starts_with('/') {
            return Ok(ModuleSource::Local(join_path(caller_dir, source)));
        }
        Err(format!("unsupported module source \"{source}\": use a local path starting with \"./\" or \"../\", or \"git::URL//DIR?ref=TAG\""))
    }

    /// The bundle directory of the module's code.
    pub fn dir(&self) -> String {
        match self {
            ModuleSource::Local(d) => d.clone(),
            ModuleSource::Git { .. } => {
                let root = self.git_root().unwrap_or_default();
                match self {
                    ModuleSource::Git { subdir, .. } if !subdir.is_empty() => {
                        normalize_path(&format!("{root}/{subdir}"))
                    }
                    _ => root,
                }
            }
        }
    }

    /// For git sources, the bundle path of the repository's root.
    pub fn git_root(&self) -> Option<String> {
        match self {
            ModuleSource::Git { url, rref, .. } => Some(format!("git::{url}?ref={rref}")),
            ModuleSource::Local(_) => None,
        }
    }
}

/// A parsed configuration: every module directory of a bundle.
#[derive(Debug, Clone)]
pub struct Config {
    /// The root module's directory.
    pub root: String,
    /// Every module, by directory.
    pub modules: BTreeMap<String, Arc<ModuleConfig>>,
    /// The bundle it came from.
    pub bundle: Arc<Bundle>,
}

impl Config {
    /// The root module.
    pub fn root_module(&self) -> &Arc<ModuleConfig> {
        &self.modules[&self.root]
    }
}

/// One module: the blocks of the configuration files of one directory.
#[derive(Debug, Clone, Default)]
pub struct ModuleConfig {
    /// Its directory in the bundle.
    pub dir: String,
    /// The `environment "NAME" {}` block, if any.
    pub environment: Option<(String, Loc)>,
    /// `variable` blocks.
    pub variables: BTreeMap<String, Variable>,
    /// `locals` entries.
    pub locals: BTreeMap<String, Attr>,
    /// `resource` blocks, by `TYPE.NAME`.
    pub resources: BTreeMap<String, ResourceConfig>,
    /// `data` blocks, by `TYPE.NAME`.
    pub data: BTreeMap<String, ResourceConfig>,
    /// `output` blocks.
    pub outputs: BTreeMap<String, Output>,
    /// `module` blocks.
    pub module_calls: BTreeMap<String, ModuleCall>,
    /// `check` blocks, by name.
    pub checks: BTreeMap<String, Check>,
    /// `moved` blocks, in the order written.
    pub moved: Vec<Moved>,
    /// `removed` blocks.
    pub removed: Vec<Removed>,
    /// `import` blocks.
    pub imports: Vec<Import>,
}

/// A `precondition` or `postcondition` block, or a check's `assert`.
#[derive(Debug, Clone)]
pub struct Condition {
    /// Must be true.
    pub condition: Expr,
    /// Shown when it is not.
    pub error_message: Expr,
    /// Where the block is.
    pub loc: Loc,
}

/// A `check "NAME" {}` block: assertions reported as warnings, never stopping a plan.
#[derive(Debug, Clone)]
pub struct Check {
    /// Its name.
    pub name: String,
    /// Where it is.
    pub loc: Loc,
    /// Its `assert` blocks.
    pub asserts: Vec<Condition>,
}

/// A `moved { from = A, to = B }` block: what state knew as `from` is now `to`.
#[derive(Debug, Clone)]
pub struct Moved {
    /// The old address, relative to the module (`random_id.a`, `random_id.a[0]`,
    /// `module.net`).
    pub from: String,
    /// The new address.
    pub to: String,
    /// Where the block is.
    pub loc: Loc,
}

/// A `removed { from = A }` block: `A` leaves the configuration; with
/// `lifecycle { destroy = false }` its objects are forgotten instead of destroyed.
#[derive(Debug, Clone)]
pub struct Removed {
    /// The address (a resource or a module call, without instance keys).
    pub from: String,
    /// Whether its objects are destroyed (the default) or only forgotten.
    pub destroy: bool,
    /// Where the block is.
    pub loc: Loc,
}

/// An `import { to = A, id = "..." }` block.
#[derive(Debug, Clone)]
pub struct Import {
    /// The address the object would take.
    pub to: String,
    /// The object's id.
    pub id: Expr,
    /// Where the block is.
    pub loc: Loc,
}

/// An attribute: `name = expr`.
#[derive(Debug, Clone)]
pub struct Attr {
    /// Its name.
    pub name: String,
    /// Its value.
    pub expr: Expr,
    /// Where the name is.
    pub loc: Loc,
}

/// A `variable` block.
#[derive(Debug, Clone)]
pub struct Variable {
    /// Its name.
    pub name: String,
    /// Where it is declared.
    pub loc: Loc,
    /// Its type constraint (`any` when none).
    pub ty: Type,
    /// Its default, already evaluated (defaults are constants).
    pub default: Option<Value>,
    /// Its description.
    pub description: Option<String>,
    /// Marked `sensitive = true`.
    pub sensitive: bool,
    /// Whether null is a value it may take (`nullable`, true unless set false): a null
    /// given then stays null; with `nullable = false` it takes the default instead.
    pub nullable: bool,
    /// `validation` blocks.
    pub validations: Vec<Validation>,
}

/// A `validation { condition, error_message }` block.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Must be true.
    pub condition: Expr,
    /// Shown when it is not.
    pub error_message: Expr,
}

/// An `output` block.
#[derive(Debug, Clone)]
pub struct Output {
    /// Its name.
    pub name: String,
    /// Where it is declared.
    pub loc: Loc,
    /// Its value.
    pub value: Expr,
    /// Masked in plans and listings.
    pub sensitive: bool,
    /// Its description.
    pub description: Option<String>,
    /// Explicit dependencies.
    pub depends_on: Vec<Reference>,
    /// `precondition` blocks, checked before the value is taken.
    pub preconditions: Vec<Condition>,
}

/// A static reference written in `depends_on` or `ignore_changes`.
#[derive(Debug, Clone)]
pub struct Reference {
    /// The names, as written (`["module", "net"]`, `["random_id", "x"]`).
    pub parts: Vec<String>,
    /// Where it is written.
    pub loc: Loc,
}

/// Whether a block declares a managed resource or a data source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `resource`.
    Managed,
    /// `data`.
    Data,
}

/// A `resource` or `data` block.
#[derive(Debug, Clone)]
pub struct ResourceConfig {
    /// Managed or data.
    pub mode: Mode,
    /// The resource type.
    pub type_name: String,
    /// Its name.
    pub name: String,
    /// Where the block is.
    pub loc: Loc,
    /// Where the type label is.
    pub type_loc: Loc,
    /// `count`.
    pub count: Option<Expr>,
    /// `for_each`.
    pub for_each: Option<Expr>,
    /// `depends_on`.
    pub depends_on: Vec<Reference>,
    /// `lifecycle`.
    pub lifecycle: Lifecycle,
    /// `lifecycle { precondition {} }`: checked before each instance is planned.
    pub preconditions: Vec<Condition>,
    /// `lifecycle { postcondition {} }`: checked on each instance's planned value (when
    /// known) and on its applied value, with `self` naming it.
    pub postconditions: Vec<Condition>,
    /// Every other attribute and block.
    pub body: BodyConfig,
}

impl ResourceConfig {
    /// `TYPE.NAME`, or `data.TYPE.NAME`.
    pub fn key(&self) -> String {
        match self.mode {
            Mode::Managed => format!("{}.{}", self.type_name, self.name),
            Mode::Data => format!("data.{}.{}", self.type_name, self.name),
        }
    }
}

/// The `lifecycle` block of a resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// Refuse any plan that destroys the resource.
    pub prevent_destroy: bool,
    /// On replacement, create the new object before destroying the old.
    pub create_before_destroy: bool,
    /// Attributes whose changes are ignored (`["*"]` for all).
    pub ignore_changes: Vec<String>,
}

/// The attributes and nested blocks of a block body.
#[derive(Debug, Clone)]
pub struct BodyConfig {
    /// Attributes by name.
    pub attrs: BTreeMap<String, Attr>,
    /// Nested blocks, in order.
    pub blocks: Vec<BlockConfig>,
    /// Where the body's block is.
    pub loc: Loc,
}

/// A nested block.
#[derive(Debug, Clone)]
pub struct BlockConfig {
    /// Its type name.
    pub type_name: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// Its body.
    pub body: BodyConfig,
    /// Where it is.
    pub loc: Loc,
}

/// A `module` block.
#[derive(Debug, Clone)]
pub struct ModuleCall {
    /// Its name.
    pub name: String,
    /// Where it is.
    pub loc: Loc,
    /// Its `source`.
    pub source: ModuleSource,
    /// Where `source` is.
    pub source_loc: Loc,
    /// `count`.
    pub count: Option<Expr>,
    /// `for_each`.
    pub for_each: Option<Expr>,
    /// `depends_on`.
    pub depends_on: Vec<Reference>,
    /// The module's input variables.
    pub inputs: BTreeMap<String, Attr>,
}

/// Parses one file's text, with errors at `file:line:col`.
pub fn parse_file(file: &Arc<SourceFile>) -> Result<Body, Diagnostic> {
    hcl_edit::parser::parse_body(&file.text).map_err(|e| parse_error(file, &e))
}

/// Turns a parser error into a diagnostic.
pub fn parse_error(file: &Arc<SourceFile>, e: &hcl_edit::parser::Error) -> Diagnostic {
    let loc = e.location();
    let offset = offset_of(&file.text, loc.line(), loc.column());
    Diagnostic::at(
        &Loc {
            file: file.clone(),
            span: offset..offset + 1,
        },
        format!("invalid HCL syntax: {}", e.message().trim()),
    )
    .with_detail("Fix the syntax at the marked position; `veeps fmt` can reformat valid files.")
}

fn offset_of(text: &str, line: usize, col: usize) -> usize {
    let mut off = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let chars: usize = l
                .chars()
                .take(col.saturating_sub(1))
                .map(char::len_utf8)
                .sum();
            return off + chars;
        }
        off += l.len();
    }
    text.len()
}

/// Parses every module of a bundle, starting from its root and following module calls.
pub fn load_config(bundle: Arc<Bundle>) -> Result<Config, Diagnostics> {
    let mut modules = BTreeMap::new();
    let mut diags = Diagnostics::default();
    let mut todo = vec![(bundle.root.clone(), None::<Loc>)];
    while let Some((dir, called_at)) = todo.pop() {
        if modules.contains_key(&dir) {
            continue;
        }
        let files = bundle.config_files(&dir);
        if files.is_empty() {
            let msg = format!("no configuration files (*.hcl) in \"{dir}\"");
            diags.push(
                Diagnostic::new(msg, called_at.clone())
                    .with_detail("Check the module's source path."),
            );
            continue;
        }
        let mut m = ModuleConfig {
            dir: dir.clone(),
            ..Default::default()
        };
        for (path, text) in files {
            let file = Arc::new(SourceFile {
                path: path.clone(),
                text: text.clone(),
            });
            match parse_file(&file) {
                Ok(body) => parse_module_body(&mut m, &file, &body, &mut diags),
                Err(d) => diags.push(d),
            }
        }
        for call in m.module_calls.values() {
            todo.push((call.source.dir(), Some(call.source_loc.clone())));
        }
        modules.insert(dir, Arc::new(m));
    }
    diags.into_result()?;
    Ok(Config {
        root: bundle.root.clone(),
        modules,
        bundle,
    })
}

const TOP_LEVEL: &[&str] = &[
    "resource",
    "data",
    "variable",
    "locals",
    "output",
    "module",
    "environment",
    "terraform",
    "check",
    "moved",
    "removed",
    "import",
];

/// The Terraform language version veeps implements (what `required_version` is checked
/// against).
pub const TERRAFORM_VERSION: &str = "1.11.4";

/// Whether `version` meets a Terraform version constraint (`">= 1.0, < 2.0"`, `"~> 1.5"`,
/// `"= 1.11.4"`, `"!= 1.2.0"`); `Err` when the constraint cannot be read.
pub fn meets_constraint(version: &str, constraint: &str) -> Result<bool, String> {
    fn parse(v: &str) -> Result<Vec<u64>, String> {
        let core = v.trim().trim_start_matches('v');
        let core = core.split(['-', '+']).next().unwrap_or(core);
        core.split('.')
            .map(|p| {
                p.parse::<u64>()
                    .map_err(|_| format!("\"{v}\" is not a version"))
            })
            .collect()
    }
    let have = parse(version)?;
    let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    let cmp = |a: &[u64], b: &[u64]| {
        (0..3)
            .map(|i| at(a, i).cmp(&at(b, i)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    };
    for part in constraint.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (op, rest) = ["~>", ">=", "<=", "!=", "=", ">", "<"]
            .iter()
            .find_map(|op| part.strip_prefix(op).map(|r| (*op, r)))
            .unwrap_or(("=", part));
        let want = parse(rest)?;
        use std::cmp::Ordering::*;
        let ok = match op {
            "=" => cmp(&have, &want) == Equal,
            "!=" => cmp(&have, &want) != Equal,
            ">" => cmp(&have, &want) == Greater,
            ">=" => cmp(&have, &want) != Less,
            "<" => cmp(&have, &want) == Less,
            "<=" => cmp(&have, &want) != Greater,
            _ => {
                // ~> X.Y: >= X.Y and < (X+1).0; ~> X.Y.Z: >= X.Y.Z and < X.(Y+1).0.
                let mut upper = want.clone();
                if upper.len() <= 1 {
                    upper = vec![at(&want, 0) + 1];
                } else {
                    upper.truncate(upper.len() - 1);
                    let last = upper.len() - 1;
                    upper[last] += 1;
                }
                cmp(&have, &want) != Less && cmp(&have, &upper) == Less
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A `terraform` block: `required_version` is checked against the language veeps
/// implements; provider requirements, backends and cloud settings have no meaning for
/// veeps (its resource types are built in, its state is its own) and are left alone.
fn parse_terraform_block(file: &Arc<SourceFile>, body: &Body, diags: &mut Diagnostics) {
    for s in body.iter() {
        match s {
            Structure::Attribute(a) => {
                let e = Expr {
                    expr: a.value.clone(),
                    file: file.clone(),
                };
                match a.key.as_str() {
                    "required_version" => {
                        let Some(c) = const_string(&e, diags) else {
                            continue;
                        };
                        match meets_constraint(TERRAFORM_VERSION, &c) {
                            Ok(true) => {}
                            Ok(false) => diags.push(Diagnostic::at(
                                &e.loc(),
                                format!(
                                    "this configuration requires Terraform {c}; veeps implements the language of Terraform {TERRAFORM_VERSION}: change required_version if the configuration works with it"
                                ),
                            )),
                            Err(m) => diags.push(Diagnostic::at(
                                &e.loc(),
                                format!("required_version: {m} (write constraints like \">= 1.0, < 2.0\" or \"~> 1.5\")"),
                            )),
                        }
                    }
                    "experiments" => diags.push(Diagnostic::at(
                        &Loc::new(file, a.key.span()),
                        "Terraform's language experiments are not available in veeps",
                    )),
                    k => diags.push(unknown_arg(
                        file,
                        a,
                        k,
                        &["required_version", "experiments"],
                        "terraform",
                    )),
                }
            }
            Structure::Block(b) => match b.ident.as_str() {
                "required_providers" | "backend" | "cloud" | "provider_meta" => {}
                other => diags.push(Diagnostic::at(
                    &Loc::new(file, b.ident.span()),
                    format!(
                        "unknown block type \"{other}\" in `terraform` (it may hold required_version, required_providers, backend, cloud)"
                    ),
                )),
            },
        }
    }
}

fn parse_module_body(
    m: &mut ModuleConfig,
    file: &Arc<SourceFile>,
    body: &Body,
    diags: &mut Diagnostics,
) {
    for s in body.iter() {
        let block = match s {
            Structure::Attribute(a) => {
                diags.push(
                    Diagnostic::at(
                        &Loc::new(file, a.key.span()),
                        format!(
                            "unexpected attribute \"{}\" at the top level",
                            a.key.as_str()
                        ),
                    )
                    .with_detail("Top-level attributes belong in a `locals` block."),
                );
                continue;
            }
            Structure::Block(b) => b,
        };
        let loc = Loc::new(file, block.ident.span());
        let labels: Vec<String> = block
            .labels
            .iter()
            .map(|l| l.as_str().to_string())
            .collect();
        let kind = block.ident.as_str();
        let need = |n: usize, diags: &mut Diagnostics| -> bool {
            if labels.len() != n {
                let what = match kind {
                    "resource" | "data" => {
                        "a type and a name, as in `resource \"random_id\" \"suffix\" {}`"
                    }
                    "terraform" | "moved" | "removed" | "import" => "no labels",
                    _ => "one name",
                };
                diags.push(Diagnostic::at(
                    &loc,
                    format!("a `{kind}` block needs {what}"),
                ));
                return false;
            }
            true
        };
        match kind {
            "environment" => {
                if need(1, diags) {
                    if let Some((_, prev)) = &m.environment {
                        diags.push(Diagnostic::at(
                            &loc,
                            format!(
                                "a second `environment` block (the first is at {})",
                                prev.position()
                            ),
                        ));
                    } else {
                        m.environment = Some((labels[0].clone(), loc.clone()));
                    }
                }
            }
            "variable" => {
                if need(1, diags) {
                    if let Some(v) =
                        parse_variable(&labels[0], loc.clone(), file, &block.body, diags)
                    {
                        if let Some(prev) = m.variables.get(&v.name) {
                            diags.push(Diagnostic::at(
                                &loc,
                                format!(
                                    "variable \"{}\" is declared twice (first at {})",
                                    v.name,
                                    prev.loc.position()
                                ),
                            ));
                        } else {
                            m.variables.insert(v.name.clone(), v);
                        }
                    }
                }
            }
            "locals" => {
                for s in block.body.iter() {
                    match s {
                        Structure::Attribute(a) => {
                            let name = a.key.as_str().to_string();
                            let aloc = Loc::new(file, a.key.span());
                            if let Some(prev) = m.locals.get(&name) {
                                diags.push(Diagnostic::at(
                                    &aloc,
                                    format!(
                                        "local value \"{name}\" is defined twice (first at {})",
                                        prev.loc.position()
                                    ),
                                ));
                                continue;
                            }
                            m.locals.insert(
                                name.clone(),
                                Attr {
                                    name,
                                    expr: Expr {
                                        expr: a.value.clone(),
                                        file: file.clone(),
                                    },
                                    loc: aloc,
                                },
                            );
                        }
                        Structure::Block(b) => diags.push(Diagnostic::at(
                            &Loc::new(file, b.ident.span()),
                            "blocks are not allowed in `locals`",
                        )),
                    }
                }
            }
            "output" => {
                if need(1, diags) {
                    let name = labels[0].clone();
                    let mut value = None;
                    let mut sensitive = false;
                    let mut description = None;
                    let mut depends_on = vec![];
                    let mut preconditions = vec![];
                    for s in block.body.iter() {
                        match s {
                            Structure::Attribute(a) => {
                                let e = Expr {
                                    expr: a.value.clone(),
                                    file: file.clone(),
                                };
                                match a.key.as_str() {
                                    "value" => value = Some(e),
                                    "sensitive" => sensitive = const_bool(&e, diags),
                                    "description" => description = const_string(&e, diags),
                                    "depends_on" => depends_on = parse_ref_list(&e, diags),
                                    k => diags.push(unknown_arg(
                                        file,
                                        a,
                                        k,
                                        &["value", "sensitive", "description", "depends_on"],
                                        "output",
                                    )),
                                }
                            }
                            Structure::Block(b) if b.ident.as_str() == "precondition" => {
                                if let Some(c) = parse_condition(file, b, diags) {
                                    preconditions.push(c);
                                }
                            }
                            Structure::Block(b) => diags.push(Diagnostic::at(
                                &Loc::new(file, b.ident.span()),
                                "`output` takes only `precondition` blocks",
                            )),
                        }
                    }
                    match value {
                        Some(value) => {
                            if m.outputs.contains_key(&name) {
                                diags.push(Diagnostic::at(
                                    &loc,
                                    format!("output \"{name}\" is declared twice"),
                                ));
                            }
                            m.outputs.insert(
                                name.clone(),
                                Output {
                                    name,
                                    loc,
                                    value,
                                    sensitive,
                                    description,
                                    depends_on,
                                    preconditions,
                                },
                            );
                        }
                        None => diags.push(Diagnostic::at(
                            &loc,
                            format!("output \"{name}\" has no `value`"),
                        )),
                    }
                }
            }
            "module" => {
                if need(1, diags) {
                    if let Some(call) =
                        parse_module_call(&labels[0], loc.clone(), file, &m.dir, &block.body, diags)
                    {
                        if m.module_calls.contains_key(&call.name) {
                            diags.push(Diagnostic::at(
                                &loc,
                                format!("module \"{}\" is declared twice", call.name),
                            ));
                        }
                        m.module_calls.insert(call.name.clone(), call);
                    }
                }
            }
            "resource" | "data" => {
                if need(2, diags) {
                    let mode = if kind == "resource" {
                        Mode::Managed
                    } else {
                        Mode::Data
                    };
                    let type_loc = Loc::new(file, block.labels[0].span());
                    let r = parse_resource(
                        mode,
                        &labels[0],
                        &labels[1],
                        loc.clone(),
                        type_loc,
                        file,
                        &block.body,
                        diags,
                    );
                    let map = if mode == Mode::Managed {
                        &mut m.resources
                    } else {
                        &mut m.data
                    };
                    let key = r.key();
                    if let Some(prev) = map.get(&key) {
                        diags.push(Diagnostic::at(
                            &loc,
                            format!("{key} is declared twice (first at {})", prev.loc.position()),
                        ));
                    } else {
                        map.insert(key, r);
                    }
                }
            }
            "terraform" => {
                if need(0, diags) {
                    parse_terraform_block(file, &block.body, diags);
                }
            }
            "check" => {
                if need(1, diags) {
                    let name = labels[0].clone();
                    let mut asserts = vec![];
                    for s in block.body.iter() {
                        match s {
                            Structure::Block(b) if b.ident.as_str() == "assert" => {
                                if let Some(c) = parse_condition(file, b, diags) {
                                    asserts.push(c);
                                }
                            }
                            Structure::Block(b) if b.ident.as_str() == "data" => diags.push(
                                Diagnostic::at(&Loc::new(file, b.ident.span()), "a data source inside `check` is not supported")
                                    .with_detail("Declare the data source at the top level and refer to it from the assertion."),
                            ),
                            Structure::Block(b) => diags.push(Diagnostic::at(
                                &Loc::new(file, b.ident.span()),
                                format!("unknown block type \"{}\" in `check` (it holds `assert` blocks)", b.ident.as_str()),
                            )),
                            Structure::Attribute(a) => diags.push(Diagnostic::at(
                                &Loc::new(file, a.key.span()),
                                format!("unsupported argument \"{}\" in `check` (it holds `assert` blocks)", a.key.as_str()),
                            )),
                        }
                    }
                    if asserts.is_empty() {
                        diags.push(Diagnostic::at(
                            &loc,
                            format!("check \"{name}\" has no `assert` block"),
                        ));
                    }
                    if m.checks.contains_key(&name) {
                        diags.push(Diagnostic::at(
                            &loc,
                            format!("check \"{name}\" is declared twice"),
                        ));
                    }
                    m.checks.insert(name.clone(), Check { name, loc, asserts });
                }
            }
            "moved" => {
                if need(0, diags) {
                    let attrs = block_attrs(file, &block.body, &["from", "to"], "moved", diags);
                    match (attrs.get("from"), attrs.get("to")) {
                        (Some(f), Some(t)) => {
                            if let (Some(from), Some(to)) =
                                (parse_address(f, diags), parse_address(t, diags))
                            {
                                let is_module = |a: &str| address_kind(a) == AddressKind::Module;
                                if is_module(&from) != is_module(&to) {
                                    diags.push(Diagnostic::at(&loc, format!("cannot move {from} to {to}: a module call moves only to a module call, and a resource only to a resource")));
                                } else if from == to {
                                    diags.push(Diagnostic::at(
                                        &loc,
                                        format!("`moved` from {from} to itself"),
                                    ));
                                } else {
                                    m.moved.push(Moved { from, to, loc });
                                }
                            }
                        }
                        _ => diags.push(Diagnostic::at(&loc, "`moved` needs both `from` and `to`")),
                    }
                }
            }
            "removed" => {
                if need(0, diags) {
                    let mut from = None;
                    let mut destroy = true;
                    for s in block.body.iter() {
                        match s {
                            Structure::Attribute(a) if a.key.as_str() == "from" => {
                                from = parse_address(
                                    &Expr {
                                        expr: a.value.clone(),
                                        file: file.clone(),
                                    },
                                    diags,
                                );
                            }
                            Structure::Block(b) if b.ident.as_str() == "lifecycle" => {
                                let attrs =
                                    block_attrs(file, &b.body, &["destroy"], "lifecycle", diags);
                                if let Some(e) = attrs.get("destroy") {
                                    destroy = const_bool(e, diags);
                                }
                            }
                            Structure::Block(b)
                                if b.ident.as_str() == "provisioner"
                                    || b.ident.as_str() == "connection" => {}
                            Structure::Attribute(a) => diags.push(unknown_arg(
                                file,
                                a,
                                a.key.as_str(),
                                &["from"],
                                "removed",
                            )),
                            Structure::Block(b) => diags.push(Diagnostic::at(
                                &Loc::new(file, b.ident.span()),
                                format!(
                                    "unknown block type \"{}\" in `removed` (it takes `lifecycle`)",
                                    b.ident.as_str()
                                ),
                            )),
                        }
                    }
                    match from {
                        Some(f) if f.ends_with(']') => diags.push(Diagnostic::at(&loc, format!("`removed` takes a resource or module without instance keys, not {f}"))),
                        Some(from) => m.removed.push(Removed { from, destroy, loc }),
                        None => diags.push(Diagnostic::at(&loc, "`removed` needs `from`")),
                    }
                }
            }
            "import" => {
                if need(0, diags) {
                    let attrs = block_attrs(
                        file,
                        &block.body,
                        &["to", "id", "provider"],
                        "import",
                        diags,
                    );
                    match (attrs.get("to"), attrs.get("id")) {
                        (Some(t), Some(id)) => {
                            if let Some(to) = parse_address(t, diags) {
                                m.imports.push(Import {
                                    to,
                                    id: id.clone(),
                                    loc,
                                });
                            }
                        }
                        _ => diags.push(Diagnostic::at(&loc, "`import` needs both `to` and `id`")),
                    }
                }
            }
            other => {
                let hint = if other == "provider" {
                    " veeps has no providers to configure: resource types are built in.".to_string()
                } else {
                    did_you_mean(other, TOP_LEVEL.iter().copied())
                };
                diags.push(
                    Diagnostic::at(&loc, format!("unknown block type \"{other}\".{hint}"))
                        .with_detail(format!("Top-level blocks are: {}.", TOP_LEVEL.join(", "))),
                );
            }
        }
    }
}

fn unknown_arg(
    file: &Arc<SourceFile>,
    a: &hcl_edit::structure::Attribute,
    k: &str,
    allowed: &[&str],
    what: &str,
) -> Diagnostic {
    Diagnostic::at(
        &Loc::new(file, a.key.span()),
        format!(
            "unsupported argument \"{k}\" in `{what}`.{}",
            did_you_mean(k, allowed.iter().copied())
        ),
    )
    .with_detail(format!("`{what}` takes: {}.", allowed.join(", ")))
}

fn const_bool(e: &Expr, diags: &mut Diagnostics) -> bool {
    match eval(e, &EmptyScope) {
        Ok(Value::Bool(b)) => b,
        Ok(v) => {
            diags.push(Diagnostic::at(
                &e.loc(),
                format!(
                    "a literal bool (true or false) is required here, got {}",
                    v.type_name()
                ),
            ));
            false
        }
        Err(d) => {
            diags.push(d);
            false
        }
    }
}

fn const_string(e: &Expr, diags: &mut Diagnostics) -> Option<String> {
    match eval(e, &EmptyScope) {
        Ok(Value::String(s)) => Some(s),
        Ok(v) => {
            diags.push(Diagnostic::at(
                &e.loc(),
                format!("a literal string is required here, got {}", v.type_name()),
            ));
            None
        }
        Err(d) => {
            diags.push(d);
            None
        }
    }
}

/// Parses a static list of references such as `[random_id.x, module.net]`.
fn parse_ref_list(e: &Expr, diags: &mut Diagnostics) -> Vec<Reference> {
    let mut out = vec![];
    let Expression::Array(a) = &e.expr else {
        diags.push(Diagnostic::at(
            &e.loc(),
            "a list of references is required here, like [random_id.x, module.net]",
        ));
        return out;
    };
    for item in a.iter() {
        match traversal_names(item).or_else(|| quoted_reference(item)) {
            Some(parts) => out.push(Reference {
                parts,
                loc: e.sub_loc(item),
            }),
            None => diags.push(Diagnostic::at(
                &e.sub_loc(item),
                "a reference such as random_id.x is required here, not an expression",
            )),
        }
    }
    out
}

/// A reference written in quotes, as Terraform 0.11 wrote them (`"aws_instance.web"`) and
/// Terraform still takes in `depends_on`.
fn quoted_reference(e: &Expression) -> Option<Vec<String>> {
    let Expression::String(s) = e else {
        return None;
    };
    let parts: Vec<String> = s.value().split('.').map(str::to_string).collect();
    let ident = |p: &String| {
        let mut c = p.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
    };
    (parts.len() >= 2 && parts.iter().all(ident)).then_some(parts)
}

/// The names of a plain traversal (`a.b.c`), if the expression is one.
pub fn traversal_names(e: &Expression) -> Option<Vec<String>> {
    match e {
        Expression::Variable(v) => Some(vec![v.as_str().to_string()]),
        Expression::Traversal(t) => {
            let mut names = vec![match &t.expr {
                Expression::Variable(v) => v.as_str().to_string(),
                _ => return None,
            }];
            for op in &t.operators {
                match op.value() {
                    TraversalOperator::GetAttr(i) => names.push(i.as_str().to_string()),
                    TraversalOperator::Index(_) | TraversalOperator::LegacyIndex(_) => {}
                    _ => return None,
                }
            }
            Some(names)
        }
        _ => None,
    }
}

fn parse_variable(
    name: &str,
    loc: Loc,
    file: &Arc<SourceFile>,
    body: &Body,
    diags: &mut Diagnostics,
) -> Option<Variable> {
    let mut v = Variable {
        name: name.to_string(),
        loc,
        ty: Type::Any,
        default: None,
        description: None,
        sensitive: false,
        nullable: true,
        validations: vec![],
    };
    let mut default_expr = None;
    for s in body.iter() {
        match s {
            Structure::Attribute(a) => {
                let e = Expr {
                    expr: a.value.clone(),
                    file: file.clone(),
                };
                match a.key.as_str() {
                    "type" => match parse_type(&e.expr) {
                        Ok(t) => v.ty = t,
                        Err(msg) => diags.push(Diagnostic::at(&e.loc(), msg).with_detail("Types are: string, number, bool, any, list(T), set(T), map(T), object({...}), tuple([...]).")),
                    },
                    "default" => default_expr = Some(e),
                    "description" => v.description = const_string(&e, diags),
                    "sensitive" => v.sensitive = const_bool(&e, diags),
                    "nullable" => v.nullable = const_bool(&e, diags),
                    k => diags.push(unknown_arg(file, a, k, &["type", "default", "description", "sensitive", "nullable", "validation"], "variable")),
                }
            }
            Structure::Block(b) if b.ident.as_str() == "validation" => {
                let mut cond = None;
                let mut msg = None;
                for s in b.body.iter() {
                    if let Structure::Attribute(a) = s {
                        let e = Expr {
                            expr: a.value.clone(),
                            file: file.clone(),
                        };
                        match a.key.as_str() {
                            "condition" => cond = Some(e),
                            "error_message" => msg = Some(e),
                            k => diags.push(unknown_arg(
                                file,
                                a,
                                k,
                                &["condition", "error_message"],
                                "validation",
                            )),
                        }
                    }
                }
                match (cond, msg) {
                    (Some(condition), Some(error_message)) => v.validations.push(Validation {
                        condition,
                        error_message,
                    }),
                    _ => diags.push(Diagnostic::at(
                        &Loc::new(file, b.ident.span()),
                        "a `validation` block needs `condition` and `error_message`",
                    )),
                }
            }
            Structure::Block(b) => diags.push(Diagnostic::at(
                &Loc::new(file, b.ident.span()),
                format!("unsupported block \"{}\" in `variable`", b.ident.as_str()),
            )),
        }
    }
    if let Some(e) = default_expr {
        match eval(&e, &EmptyScope) {
            Ok(d) => match crate::value::convert(&d, &v.ty) {
                Ok(d) => v.default = Some(d),
                Err(msg) => diags.push(Diagnostic::at(
                    &e.loc(),
                    format!(
                        "the default of variable \"{name}\" does not match its type {}: {msg}",
                        v.ty
                    ),
                )),
            },
            Err(d) => diags.push(d),
        }
    }
    Some(v)
}

/// Parses a type constraint expression such as `list(object({ name = string }))`.
pub fn parse_type(e: &Expression) -> Result<Type, String> {
    match e {
        Expression::Variable(v) => match v.as_str() {
            "string" => Ok(Type::String),
            "number" => Ok(Type::Number),
            "bool" => Ok(Type::Bool),
            "any" => Ok(Type::Any),
            "list" => Ok(Type::List(Box::new(Type::Any))),
            "map" => Ok(Type::Map(Box::new(Type::Any))),
            "set" => Ok(Type::Set(Box::new(Type::Any))),
            other => Err(format!(
                "unknown type \"{other}\".{}",
                did_you_mean(
                    other,
                    ["string", "number", "bool", "any", "list", "map", "set", "object", "tuple"]
                )
            )),
        },
        Expression::FuncCall(f) => {
            let name = f.name.name.as_str();
            let arg = f
                .args
                .iter()
                .next()
                .ok_or_else(|| format!("{name}() needs a type argument"))?;
            match name {
                "list" => Ok(Type::List(Box::new(parse_type(arg)?))),
                "set" => Ok(Type::Set(Box::new(parse_type(arg)?))),
                "map" => Ok(Type::Map(Box::new(parse_type(arg)?))),
                "tuple" => match arg {
                    Expression::Array(a) => Ok(Type::Tuple(
                        a.iter().map(parse_type).collect::<Result<_, _>>()?,
                    )),
                    _ => Err("tuple() needs a list of types, like tuple([string, number])".into()),
                },
                "object" => match arg {
                    Expression::Object(o) => {
                        let mut attrs = vec![];
                        for (k, v) in o.iter() {
                            let name = match k {
                                ObjectKey::Ident(i) => i.as_str().to_string(),
                                ObjectKey::Expression(Expression::String(s)) => s.value().clone(),
                                _ => {
                                    return Err(
                                        "object type attribute names must be identifiers".into()
                                    )
                                }
                            };
                            let (ty, optional, default) = match v.expr() {
                                Expression::FuncCall(f) if f.name.name.as_str() == "optional" => {
                                    let mut args = f.args.iter();
                                    let t =
                                        parse_type(args.next().ok_or("optional() needs a type")?)?;
                                    let d = match args.next() {
                                        Some(d) => {
                                            let file = Arc::new(SourceFile {
                                                path: String::new(),
                                                text: String::new(),
                                            });
                                            Some(
                                                eval(
                                                    &Expr {
                                                        expr: d.clone(),
                                                        file,
                                                    },
                                                    &EmptyScope,
                                                )
                                                .map_err(|d| d.summary)?,
                                            )
                                        }
                                        None => None,
                                    };
                                    (t, true, d)
                                }
                                t => (parse_type(t)?, false, None),
                            };
                            attrs.push(ObjectAttr {
                                name,
                                ty,
                                optional,
                                default,
                            });
                        }
                        Ok(Type::Object(attrs))
                    }
                    _ => {
                        Err("object() needs attribute types, like object({ name = string })".into())
                    }
                },
                other => Err(format!("unknown type constructor \"{other}\"")),
            }
        }
        _ => Err(
            "a type such as string, number, bool, list(string) or object({...}) is required".into(),
        ),
    }
}

fn parse_module_call(
    name: &str,
    loc: Loc,
    file: &Arc<SourceFile>,
    caller_dir: &str,
    body: &Body,
    diags: &mut Diagnostics,
) -> Option<ModuleCall> {
    let mut source = None;
    let mut count = None;
    let mut for_each = None;
    let mut depends_on = vec![];
    let mut inputs = BTreeMap::new();
    for s in body.iter() {
        match s {
            Structure::Attribute(a) => {
                let e = Expr {
                    expr: a.value.clone(),
                    file: file.clone(),
                };
                let aloc = Loc::new(file, a.key.span());
                match a.key.as_str() {
                    "source" => match const_string(&e, diags) {
                        Some(s) => match ModuleSource::parse(caller_dir, &s) {
                            Ok(src) => source = Some((src, e.loc())),
                            Err(msg) => diags.push(Diagnostic::at(&e.loc(), msg)),
                        },
                        None => return None,
                    },
                    "version" => diags.push(Diagnostic::at(&aloc, "`version` is for registry modules; pin a git module with \"?ref=TAG\" in its source")),
                    "count" => count = Some(e),
                    "for_each" => for_each = Some(e),
                    "depends_on" => depends_on = parse_ref_list(&e, diags),
                    "providers" => diags.push(Diagnostic::at(&aloc, "veeps has no providers to pass to modules")),
                    k => {
                        inputs.insert(k.to_string(), Attr { name: k.to_string(), expr: e, loc: aloc });
                    }
                }
            }
            Structure::Block(b) => diags.push(Diagnostic::at(
                &Loc::new(file, b.ident.span()),
                format!("unsupported block \"{}\" in `module`", b.ident.as_str()),
            )),
        }
    }
    if count.is_some() && for_each.is_some() {
        diags.push(Diagnostic::at(
            &loc,
            "`count` and `for_each` cannot both be set",
        ));
    }
    let Some((source, source_loc)) = source else {
        diags.push(
            Diagnostic::at(&loc, format!("module \"{name}\" has no `source`"))
                .with_detail("Add source = \"./modules/NAME\" or a git source."),
        );
        return None;
    };
    Some(ModuleCall {
        name: name.to_string(),
        loc,
        source,
        source_loc,
        count,
        for_each,
        depends_on,
        inputs,
    })
}

#[allow(clippy::too_many_arguments)]
fn parse_resource(
    mode: Mode,
    ty: &str,
    name: &str,
    loc: Loc,
    type_loc: Loc,
    file: &Arc<SourceFile>,
    body: &Body,
    diags: &mut Diagnostics,
) -> ResourceConfig {
    let mut r = ResourceConfig {
        mode,
        type_name: ty.to_string(),
        name: name.to_string(),
        loc: loc.clone(),
        type_loc,
        count: None,
        for_each: None,
        depends_on: vec![],
        lifecycle: Lifecycle::default(),
        preconditions: vec![],
        postconditions: vec![],
        body: BodyConfig {
            attrs: BTreeMap::new(),
            blocks: vec![],
            loc: loc.clone(),
        },
    };
    for s in body.iter() {
        match s {
            Structure::Attribute(a) => {
                let e = Expr {
                    expr: a.value.clone(),
                    file: file.clone(),
                };
                let aloc = Loc::new(file, a.key.span());
                match a.key.as_str() {
                    "count" => r.count = Some(e),
                    "for_each" => r.for_each = Some(e),
                    "depends_on" => r.depends_on = parse_ref_list(&e, diags),
                    "provider" => diags.push(Diagnostic::at(
                        &aloc,
                        "veeps has no providers to choose: resource types are built in",
                    )),
                    k => {
                        if r.body.attrs.contains_key(k) {
                            diags.push(Diagnostic::at(
                                &aloc,
                                format!("argument \"{k}\" is set twice"),
                            ));
                        }
                        r.body.attrs.insert(
                            k.to_string(),
                            Attr {
                                name: k.to_string(),
                                expr: e,
                                loc: aloc,
                            },
                        );
                    }
                }
            }
            Structure::Block(b) if b.ident.as_str() == "lifecycle" => {
                for s in b.body.iter() {
                    match s {
                        Structure::Block(c) if c.ident.as_str() == "precondition" => {
                            r.preconditions.extend(parse_condition(file, c, diags));
                        }
                        Structure::Block(c) if c.ident.as_str() == "postcondition" => {
                            r.postconditions.extend(parse_condition(file, c, diags));
                        }
                        Structure::Attribute(a) if mode == Mode::Data => diags.push(unknown_arg(file, a, a.key.as_str(), &[], "lifecycle of a data source (it takes precondition and postcondition blocks)")),
                        Structure::Attribute(a) => {
                            let e = Expr {
                                expr: a.value.clone(),
                                file: file.clone(),
                            };
                            match a.key.as_str() {
                                "prevent_destroy" => r.lifecycle.prevent_destroy = const_bool(&e, diags),
                                "create_before_destroy" => r.lifecycle.create_before_destroy = const_bool(&e, diags),
                                "ignore_changes" => match &e.expr {
                                    Expression::Variable(v) if v.as_str() == "all" => r.lifecycle.ignore_changes = vec!["*".into()],
                                    Expression::Array(arr) => {
                                        for item in arr.iter() {
                                            match (traversal_names(item), item) {
                                                (Some(p), _) => r.lifecycle.ignore_changes.push(p.join(".")),
                                                (None, Expression::String(s)) => r.lifecycle.ignore_changes.push(s.value().clone()),
                                                _ => diags.push(Diagnostic::at(&e.sub_loc(item), "an attribute name is required here")),
                                            }
                                        }
                                    }
                                    _ => diags.push(Diagnostic::at(&e.loc(), "`ignore_changes` takes a list of attribute names, or `all`")),
                                },
                                k => diags.push(unknown_arg(file, a, k, &["prevent_destroy", "create_before_destroy", "ignore_changes"], "lifecycle")),
                            }
                        }
                        Structure::Block(b) => diags.push(Diagnostic::at(
                            &Loc::new(file, b.ident.span()),
                            format!("unknown block type \"{}\" in `lifecycle` (it takes precondition and postcondition blocks)", b.ident.as_str()),
                        )),
                    }
                }
            }
            Structure::Block(b) => r.body.blocks.push(parse_block(file, b, diags)),
        }
    }
    if r.count.is_some() && r.for_each.is_some() {
        diags.push(Diagnostic::at(
            &loc,
            "`count` and `for_each` cannot both be set",
        ));
    }
    r
}

/// A `precondition`, `postcondition` or `assert` block's `condition` and `error_message`.
fn parse_condition(
    file: &Arc<SourceFile>,
    b: &hcl_edit::structure::Block,
    diags: &mut Diagnostics,
) -> Option<Condition> {
    let what = b.ident.as_str();
    let loc = Loc::new(file, b.ident.span());
    let attrs = block_attrs(file, &b.body, &["condition", "error_message"], what, diags);
    match (attrs.get("condition"), attrs.get("error_message")) {
        (Some(c), Some(m)) => Some(Condition {
            condition: c.clone(),
            error_message: m.clone(),
            loc,
        }),
        _ => {
            diags.push(Diagnostic::at(
                &loc,
                format!("`{what}` needs both `condition` and `error_message`"),
            ));
            None
        }
    }
}

/// The attributes of a block that takes only `allowed` ones (and no blocks).
fn block_attrs(
    file: &Arc<SourceFile>,
    body: &Body,
    allowed: &[&str],
    what: &str,
    diags: &mut Diagnostics,
) -> BTreeMap<String, Expr> {
    let mut out = BTreeMap::new();
    for s in body.iter() {
        match s {
            Structure::Attribute(a) if allowed.contains(&a.key.as_str()) => {
                out.insert(
                    a.key.as_str().to_string(),
                    Expr {
                        expr: a.value.clone(),
                        file: file.clone(),
                    },
                );
            }
            Structure::Attribute(a) => {
                diags.push(unknown_arg(file, a, a.key.as_str(), allowed, what))
            }
            Structure::Block(b) => diags.push(Diagnostic::at(
                &Loc::new(file, b.ident.span()),
                format!("blocks are not allowed in `{what}`"),
            )),
        }
    }
    out
}

/// What an address written in `moved`, `removed` or `import` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    /// A module call (`module.net`, `module.net["a"]`).
    Module,
    /// A resource or one of its instances (`random_id.a`, `module.net.random_id.a[0]`).
    Resource,
}

/// Whether `address` ends in a module call or a resource.
pub fn address_kind(address: &str) -> AddressKind {
    let parts = split_address(address);
    match parts.len() {
        n if n >= 2 && parts[n - 2].0 == "module" => AddressKind::Module,
        _ => AddressKind::Resource,
    }
}

/// An address cut into its names, each with the instance key written after it
/// (`module.net["a"].random_id.x[0]` is `module`, `net["a"]`, `random_id`, `x[0]`).
pub fn split_address(address: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut name = String::new();
    let mut key = String::new();
    let mut in_key = false;
    let mut in_str = false;
    let mut chars = address.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' if in_key => {
                in_str = !in_str;
                key.push(c);
            }
            '\\' if in_str => {
                key.push(c);
                if let Some(n) = chars.next() {
                    key.push(n);
                }
            }
            '[' if !in_str => {
                in_key = true;
                key.push(c);
            }
            ']' if !in_str => {
                in_key = false;
                key.push(c);
            }
            '.' if !in_key => out.push((std::mem::take(&mut name), std::mem::take(&mut key))),
            _ if in_key => key.push(c),
            _ => name.push(c),
        }
    }
    out.push((name, key));
    out
}

/// Reads a static address (`random_id.a`, `random_id.a[0]`, `module.net["x"].random_id.a`)
/// as state writes it.
fn parse_address(e: &Expr, diags: &mut Diagnostics) -> Option<String> {
    let bad = |diags: &mut Diagnostics| {
        diags.push(Diagnostic::at(
            &e.loc(),
            "an address such as random_id.a, random_id.a[0] or module.net is required here",
        ));
        None
    };
    let (root, ops) = match &e.expr {
        Expression::Variable(v) => (v.as_str().to_string(), &[][..]),
        Expression::Traversal(t) => match &t.expr {
            Expression::Variable(v) => (v.as_str().to_string(), &t.operators[..]),
            _ => return bad(diags),
        },
        _ => return bad(diags),
    };
    let mut out = root;
    for op in ops {
        match op.value() {
            TraversalOperator::GetAttr(i) => {
                out.push('.');
                out.push_str(i.as_str());
            }
            TraversalOperator::Index(Expression::Number(n)) => {
                out.push_str(&format!("[{}]", n.value()))
            }
            TraversalOperator::LegacyIndex(n) => out.push_str(&format!("[{}]", n.value())),
            TraversalOperator::Index(Expression::String(s)) => out.push_str(&format!(
                "[{}]",
                serde_json::Value::String(s.value().to_string())
            )),
            _ => return bad(diags),
        }
    }
    let parts = split_address(&out);
    let mut i = 0;
    while i + 1 < parts.len() && parts[i].0 == "module" && parts[i].1.is_empty() {
        i += 2;
    }
    let rest = &parts[i..];
    let ok = match rest.len() {
        0 => i > 0,
        2 => rest[0].1.is_empty() && rest[0].0 != "data",
        _ => false,
    };
    if !ok || parts.iter().any(|(n, _)| n.is_empty()) {
        return bad(diags);
    }
    Some(out)
}

fn parse_block(
    file: &Arc<SourceFile>,
    b: &hcl_edit::structure::Block,
    diags: &mut Diagnostics,
) -> BlockConfig {
    let loc = Loc::new(file, b.ident.span());
    let mut body = BodyConfig {
        attrs: BTreeMap::new(),
        blocks: vec![],
        loc: loc.clone(),
    };
    for s in b.body.iter() {
        match s {
            Structure::Attribute(a) => {
                let k = a.key.as_str().to_string();
                let aloc = Loc::new(file, a.key.span());
                if body.attrs.contains_key(&k) {
                    diags.push(Diagnostic::at(
                        &aloc,
                        format!("argument \"{k}\" is set twice"),
                    ));
                }
                body.attrs.insert(
                    k.clone(),
                    Attr {
                        name: k,
                        expr: Expr {
                            expr: a.value.clone(),
                            file: file.clone(),
                        },
                        loc: aloc,
                    },
                );
            }
            Structure::Block(inner) => body.blocks.push(parse_block(file, inner, diags)),
        }
    }
    BlockConfig {
        type_name: b.ident.as_str().to_string(),
        labels: b.labels.iter().map(|l| l.as_str().to_string()).collect(),
        body,
        loc,
    }
}

impl BlockConfig {
    /// For a `dynamic "NAME"` block: the name its iterator is known by inside it
    /// (`iterator = x`, else the block type's name).
    pub fn dynamic_iterator(&self) -> Option<String> {
        if self.type_name != "dynamic" {
            return None;
        }
        let named = self
            .body
            .attrs
            .get("iterator")
            .map(|a| a.expr.text().trim().to_string())
            .filter(|t| !t.is_empty());
        named.or_else(|| self.labels.first().cloned())
    }
}

/// The environment name a bundle declares with `environment "NAME" {}`, if any.
pub fn declared_environment(bundle: &Bundle) -> Result<Option<String>, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut m = ModuleConfig {
        dir: bundle.root.clone(),
        ..Default::default()
    };
    for (path, text) in bundle.config_files(&bundle.root) {
        let file = Arc::new(SourceFile {
            path: path.clone(),
            text: text.clone(),
        });
        match parse_file(&file) {
            Ok(body) => parse_module_body(&mut m, &file, &body, &mut diags),
            Err(d) => diags.push(d),
        }
    }
    diags.into_result()?;
    Ok(m.environment.map(|(n, _)| n))
}

/// The environment a bundle belongs to: its `environment` block, else its directory's name.
pub fn environment_name(bundle: &Bundle) -> Result<String, Diagnostics> {
    if let Some(n) = declared_environment(bundle)? {
        return Ok(n);
    }
    let root = std::path::Path::new(&bundle.root);
    let name = if bundle.root == "." {
        std::env::current_dir()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().to_string()))
    } else {
        root.file_name().map(|n| n.to_string_lossy().to_string())
    };
    name.filter(|n| !n.is_empty()).ok_or_else(|| {
        Diagnostics::from(Diagnostic::new(
            format!(
                "cannot name the environment in \"{}\": add an `environment \"NAME\" {{}}` block",
                bundle.root
            ),
            None,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(join_path("live/stage", "../../modules/vpc"), "modules/vpc");
        assert_eq!(join_path(".", "./modules/vpc"), "modules/vpc");
        assert_eq!(join_path(".", "../x"), "../x");
        assert_eq!(
            normalize_path("git::file:///tmp/r?ref=v1/modules/a/../b/x.hcl"),
            "git::file:///tmp/r?ref=v1/modules/b/x.hcl"
        );
        assert_eq!(
            parent_dir("git::file:///tmp/r?ref=v1/main.hcl"),
            "git::file:///tmp/r?ref=v1"
        );
    }

    #[test]
    fn git_sources() {
        let s = ModuleSource::parse(".", "git::file:///tmp/repo//modules/vpc?ref=v1.2.0").unwrap();
        assert_eq!(
            s,
            ModuleSource::Git {
                url: "file:///tmp/repo".into(),
                rref: "v1.2.0".into(),
                subdir: "modules/vpc".into()
            }
        );
        assert_eq!(s.dir(), "git::file:///tmp/repo?ref=v1.2.0/modules/vpc");
        let s = ModuleSource::parse(".", "git::https://example.com/m.git?ref=v1").unwrap();
        assert_eq!(s.dir(), "git::https://example.com/m.git?ref=v1");
        assert!(ModuleSource::parse(".", "git::https://example.com/m.git").is_err());
        assert!(ModuleSource::parse(".", "modules/x").is_err());
    }

    #[test]
    fn parses_blocks_and_reports_errors() {
        let mut b = Bundle {
            root: "env".into(),
            client: Default::default(),
            files: BTreeMap::new(),
        };
        b.files.insert(
            "env/main.hcl".into(),
            "environment \"stage\" {}\nvariable \"n\" {\n  type = number\n  default = 2\n}\nresource \"random_id\" \"x\" {\n  count = var.n\n  byte_length = 4\n  lifecycle { ignore_changes = [byte_length] }\n}\n".into(),
        );
        let c = load_config(Arc::new(b.clone())).unwrap();
        let m = c.root_module();
        assert_eq!(m.environment.as_ref().unwrap().0, "stage");
        assert_eq!(m.variables["n"].default, Some(Value::from(2i64)));
        assert_eq!(
            m.resources["random_id.x"].lifecycle.ignore_changes,
            vec!["byte_length"]
        );
        b.files
            .insert("env/bad.hcl".into(), "resorce \"a\" \"b\" {}\n".into());
        let err = load_config(Arc::new(b)).unwrap_err().to_string();
        assert!(err.contains("env/bad.hcl:1:1"), "{err}");
        assert!(err.contains("Did you mean \"resource\""), "{err}");
    }

    #[test]
    fn quoted_references_in_depends_on_are_references() {
        let mut b = Bundle {
            root: "e".into(),
            client: Default::default(),
            files: BTreeMap::new(),
        };
        b.files.insert(
            "e/main.hcl".into(),
            "resource \"random_id\" \"a\" {\n  byte_length = 2\n}\nresource \"random_id\" \"b\" {\n  byte_length = 2\n  depends_on  = [\"random_id.a\", random_id.a]\n}\n".into(),
        );
        let c = load_config(Arc::new(b.clone())).unwrap();
        let deps = &c.root_module().resources["random_id.b"].depends_on;
        assert_eq!(deps.len(), 2);
        assert_eq!(deps[0].parts, ["random_id", "a"]);
        b.files.insert(
            "e/main.hcl".into(),
            "resource \"random_id\" \"b\" {\n  byte_length = 2\n  depends_on  = [\"not a reference\"]\n}\n".into(),
        );
        let err = load_config(Arc::new(b)).unwrap_err().to_string();
        assert!(err.contains("e/main.hcl:3:"), "{err}");
    }

    #[test]
    fn version_constraints_as_terraform_reads_them() {
        let ok = |c: &str| meets_constraint("1.11.4", c).unwrap();
        assert!(ok(">= 1.0"));
        assert!(ok(">= 0.13, < 2.0"));
        assert!(ok("~> 1.5"));
        assert!(!ok("~> 1.5.0"));
        assert!(ok("~> 1.11.0"));
        assert!(ok("= 1.11.4") && ok("1.11.4"));
        assert!(!ok("!= 1.11.4"));
        assert!(!ok(">= 1.12"));
        assert!(!ok("< 1.11"));
        assert!(ok("~> 1"));
        assert!(!ok("~> 0.12"));
        assert!(meets_constraint("1.11.4", ">= one").is_err());
    }

    #[test]
    fn terraform_blocks_are_read_and_their_version_checked() {
        let mut b = Bundle {
            root: "e".into(),
            client: Default::default(),
            files: BTreeMap::new(),
        };
        b.files.insert(
            "e/versions.hcl".into(),
            "terraform {\n  required_version = \">= 1.3, < 2.0\"\n  required_providers {\n    aws = {\n      source  = \"hashicorp/aws\"\n      version = \">= 5.0\"\n    }\n  }\n  backend \"s3\" {\n    bucket = \"state\"\n  }\n}\n".into(),
        );
        assert!(load_config(Arc::new(b.clone())).is_ok());
        b.files.insert(
            "e/versions.hcl".into(),
            "terraform {\n  required_version = \">= 1.12\"\n}\n".into(),
        );
        let err = load_config(Arc::new(b.clone())).unwrap_err().to_string();
        assert!(err.contains("e/versions.hcl:2:"), "{err}");
        assert!(err.contains("requires Terraform >= 1.12"), "{err}");
        b.files.insert(
            "e/versions.hcl".into(),
            "terraform {\n  required_versions = \"1\"\n}\n".into(),
        );
        let err = load_config(Arc::new(b)).unwrap_err().to_string();
        assert!(err.contains("required_version"), "{err}");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let mut b = Bundle {
            root: "e".into(),
            client: Default::default(),
            files: BTreeMap::new(),
        };
        b.files
            .insert("e/a.hcl".into(), "locals {\n  x = \n}\n".into());
        let err = load_config(Arc::new(b)).unwrap_err();
        assert!(
            err.0[0].position().unwrap().starts_with("e/a.hcl:"),
            "{err}"
        );
    }
}
