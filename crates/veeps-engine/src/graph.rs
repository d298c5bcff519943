//! The static dependency graph of a configuration: one node per variable, local, resource,
//! data source, output and module call of every module path, with edges from references.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use veeps_lang::config::{Config, ModuleConfig, Reference as StaticRef};
use veeps_lang::diag::{did_you_mean, Diagnostic, Diagnostics, Loc};
use veeps_lang::eval::{Expr, Reference};
use veeps_resource::Registry;

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `variable`.
    Var(String),
    /// `locals` entry.
    Local(String),
    /// `resource` (`TYPE.NAME`).
    Resource(String),
    /// `data` (`TYPE.NAME`).
    Data(String),
    /// `output`.
    Output(String),
    /// `module` call.
    Call(String),
    /// `check` block.
    Check(String),
}

/// A node: a kind at a module path (the names of the module calls leading to it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Module call names from the root.
    pub path: Vec<String>,
    /// What it is.
    pub kind: Kind,
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.path {
            write!(f, "module.{p}.")?;
        }
        match &self.kind {
            Kind::Var(n) => write!(f, "var.{n}"),
            Kind::Local(n) => write!(f, "local.{n}"),
            Kind::Resource(n) => write!(f, "{n}"),
            Kind::Data(n) => write!(f, "data.{n}"),
            Kind::Output(n) => write!(f, "output.{n}"),
            Kind::Call(n) => write!(f, "module.{n}"),
            Kind::Check(n) => write!(f, "check.{n}"),
        }
    }
}

fn outputs_of(config: &Config, m: &ModuleConfig, call: &str) -> Vec<String> {
    m.module_calls
        .get(call)
        .and_then(|c| config.modules.get(&c.source.dir()))
        .map(|cm| cm.outputs.keys().cloned().collect())
        .unwrap_or_default()
}

/// The graph.
pub struct Graph<'c> {
    config: &'c Config,
    /// Every node, with the module it is declared in and where.
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Edges: node -> the nodes it depends on.
    pub deps: BTreeMap<NodeId, BTreeSet<NodeId>>,
}

/// What the graph knows about a node.
pub struct NodeInfo {
    /// The module it is declared in.
    pub module: Arc<ModuleConfig>,
    /// Where it is declared.
    pub loc: Loc,
}

impl<'c> Graph<'c> {
    /// Builds the graph of `config`, checking every reference. Reports every undeclared
    /// reference and every cycle.
    pub fn build(config: &'c Config, registry: &Registry) -> Result<Graph<'c>, Diagnostics> {
        let mut g = Graph {
            config,
            nodes: BTreeMap::new(),
            deps: BTreeMap::new(),
        };
        let mut diags = Diagnostics::default();
        let mut stack = vec![(
            Vec::<String>::new(),
            config.root_module().clone(),
            Vec::<String>::new(),
        )];
        while let Some((path, m, chain)) = stack.pop() {
            g.add_module(registry, &path, &m, &mut diags);
            for call in m.module_calls.values() {
                let dir = call.source.dir();
                if chain.contains(&dir) {
                    diags.push(Diagnostic::at(
                        &call.source_loc,
                        format!(
                            "module \"{}\" calls itself (through {})",
                            call.name,
                            chain.join(" -> ")
                        ),
                    ));
                    continue;
                }
                if let Some(child) = config.modules.get(&dir) {
                    let mut p = path.clone();
                    p.push(call.name.clone());
                    let mut c = chain.clone();
                    c.push(dir);
                    stack.push((p, child.clone(), c));
                }
            }
        }
        diags.into_result()?;
        g.check_cycles()?;
        Ok(g)
    }

    fn node(&mut self, path: &[String], kind: Kind, m: &Arc<ModuleConfig>, loc: &Loc) -> NodeId {
        let id = NodeId {
            path: path.to_vec(),
            kind,
        };
        self.nodes.insert(
            id.clone(),
            NodeInfo {
                module: m.clone(),
                loc: loc.clone(),
            },
        );
        let entry = self.deps.entry(id.clone()).or_default();
        if let Some((last, parent)) = path.split_last() {
            entry.insert(NodeId {
                path: parent.to_vec(),
                kind: Kind::Call(last.clone()),
            });
        }
        id
    }

    fn add_module(
        &mut self,
        registry: &Registry,
        path: &[String],
        m: &Arc<ModuleConfig>,
        diags: &mut Diagnostics,
    ) {
        for v in m.variables.values() {
            self.node(path, Kind::Var(v.name.clone()), m, &v.loc);
        }
        for l in m.locals.values() {
            let id = self.node(path, Kind::Local(l.name.clone()), m, &l.loc);
            self.add_refs(&id, m, &l.expr, Ctx::default(), diags);
        }
        for (kind_of, map) in [(true, &m.resources), (false, &m.data)] {
            for (key, r) in map {
                let kind = if kind_of {
                    Kind::Resource(key.clone())
                } else {
                    Kind::Data(key.trim_start_matches("data.").to_string())
                };
                let id = self.node(path, kind, m, &r.loc);
                let known = if kind_of {
                    registry.resource(&r.type_name).is_some()
                } else {
                    registry.data(&r.type_name).is_some()
                };
                if !known {
                    let (what, names): (&str, Vec<&str>) = if kind_of {
                        ("resource", registry.resource_names().collect())
                    } else {
                        ("data source", registry.data_names().collect())
                    };
                    diags.push(
                        Diagnostic::at(
                            &r.type_loc,
                            format!(
                                "unknown {what} type \"{}\".{}",
                                r.type_name,
                                did_you_mean(&r.type_name, names.iter().copied())
                            ),
                        )
                        .with_detail(format!("Known {what} types: {}.", names.join(", "))),
                    );
                }
                let ctx = Ctx {
                    count: r.count.is_some(),
                    each: r.for_each.is_some(),
                };
                for e in r.count.iter().chain(r.for_each.iter()) {
                    self.add_refs(&id, m, e, Ctx::default(), diags);
                }
                for_each_expr(&r.body, &mut |e, bound| {
                    self.add_refs_bound(&id, m, e, ctx, bound, diags)
                });
                let this = ["self".to_string()];
                for c in &r.preconditions {
                    for e in [&c.condition, &c.error_message] {
                        self.add_refs(&id, m, e, ctx, diags);
                    }
                }
                for c in &r.postconditions {
                    for e in [&c.condition, &c.error_message] {
                        self.add_refs_bound(&id, m, e, ctx, &this, diags);
                    }
                }
                self.add_static(&id, m, &r.depends_on, diags);
            }
        }
        for o in m.outputs.values() {
            let id = self.node(path, Kind::Output(o.name.clone()), m, &o.loc);
            self.add_refs(&id, m, &o.value, Ctx::default(), diags);
            for c in &o.preconditions {
                for e in [&c.condition, &c.error_message] {
                    self.add_refs(&id, m, e, Ctx::default(), diags);
                }
            }
            self.add_static(&id, m, &o.depends_on, diags);
        }
        for c in m.checks.values() {
            let id = self.node(path, Kind::Check(c.name.clone()), m, &c.loc);
            for a in &c.asserts {
                for e in [&a.condition, &a.error_message] {
                    self.add_refs(&id, m, e, Ctx::default(), diags);
                }
            }
        }
        for c in m.module_calls.values() {
            let id = self.node(path, Kind::Call(c.name.clone()), m, &c.loc);
            for e in c.count.iter().chain(c.for_each.iter()) {
                self.add_refs(&id, m, e, Ctx::default(), diags);
            }
            let ctx = Ctx {
                count: c.count.is_some(),
                each: c.for_each.is_some(),
            };
            for a in c.inputs.values() {
                self.add_refs(&id, m, &a.expr, ctx, diags);
            }
            self.add_static(&id, m, &c.depends_on, diags);
        }
    }

    fn add_static(
        &mut self,
        id: &NodeId,
        m: &Arc<ModuleConfig>,
        refs: &[StaticRef],
        diags: &mut Diagnostics,
    ) {
        for r in refs {
            let reference = Reference {
                root: r.parts[0].clone(),
                names: r.parts[1..].to_vec(),
                loc: r.loc.clone(),
                unmarked: false,
            };
            let outputs_of = |call: &str| outputs_of(self.config, m, call);
            match resolve(&id.path, m, &reference, Ctx::default(), &outputs_of) {
                Ok(targets) => {
                    self.deps.entry(id.clone()).or_default().extend(targets);
                }
                Err(d) => diags.push(d),
            }
        }
    }

    fn add_refs(
        &mut self,
        id: &NodeId,
        m: &Arc<ModuleConfig>,
        e: &Expr,
        ctx: Ctx,
        diags: &mut Diagnostics,
    ) {
        self.add_refs_bound(id, m, e, ctx, &[], diags)
    }

    /// [`Self::add_refs`], leaving out references to `bound` names (dynamic blocks'
    /// iterators).
    fn add_refs_bound(
        &mut self,
        id: &NodeId,
        m: &Arc<ModuleConfig>,
        e: &Expr,
        ctx: Ctx,
        bound: &[String],
        diags: &mut Diagnostics,
    ) {
        let outputs_of = |call: &str| outputs_of(self.config, m, call);
        for r in e.references() {
            if bound.contains(&r.root) {
                continue;
            }
            match resolve(&id.path, m, &r, ctx, &outputs_of) {
                Ok(targets) => {
                    if targets.contains(id) {
                        diags.push(Diagnostic::at(&r.loc, format!("{id} refers to itself")));
                        continue;
                    }
                    self.deps.entry(id.clone()).or_default().extend(targets);
                }
                Err(d) => diags.push(d),
            }
        }
    }

    fn check_cycles(&self) -> Result<(), Diagnostics> {
        // Tarjan's strongly connected components.
        struct T<'a> {
            g: &'a Graph<'a>,
            index: BTreeMap<&'a NodeId, usize>,
            low: BTreeMap<&'a NodeId, usize>,
            on: BTreeSet<&'a NodeId>,
            stack: Vec<&'a NodeId>,
            next: usize,
            sccs: Vec<Vec<&'a NodeId>>,
        }
        impl<'a> T<'a> {
            fn visit(&mut self, v: &'a NodeId) {
                self.index.insert(v, self.next);
                self.low.insert(v, self.next);
                self.next += 1;
                self.stack.push(v);
                self.on.insert(v);
                for w in self.g.deps.get(v).into_iter().flatten() {
                    if !self.g.nodes.contains_key(w) {
                        continue;
                    }
                    if !self.index.contains_key(w) {
                        self.visit(w);
                        let lw = self.low[w];
                        let lv = self.low.get_mut(v).expect("visited");
                        *lv = (*lv).min(lw);
                    } else if self.on.contains(w) {
                        let iw = self.index[w];
                        let lv = self.low.get_mut(v).expect("visited");
                        *lv = (*lv).min(iw);
                    }
                }
                if self.low[v] == self.index[v] {
                    let mut scc = vec![];
                    while let Some(w) = self.stack.pop() {
                        self.on.remove(w);
                        scc.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if scc.len() > 1 {
                        scc.reverse();
                        self.sccs.push(scc);
                    }
                }
            }
        }
        let mut t = T {
            g: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            on: BTreeSet::new(),
            stack: vec![],
            next: 0,
            sccs: vec![],
        };
        for v in self.nodes.keys() {
            if !t.index.contains_key(v) {
                t.visit(v);
            }
        }
        let mut diags = Diagnostics::default();
        for scc in t.sccs {
            let names: Vec<String> = scc.iter().map(|n| n.to_string()).collect();
            let members: Vec<String> = scc
                .iter()
                .map(|n| format!("  {} ({})", n, self.nodes[*n].loc.position()))
                .collect();
            let first = &self.nodes[scc[0]].loc;
            diags.push(
                Diagnostic::at(first, format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]))
                    .with_detail(format!("Each of these refers to the next:\n{}\nBreak the cycle by removing one of the references.", members.join("\n"))),
            );
        }
        diags.into_result()
    }

    /// Resource nodes reachable from `id` through non-resource nodes: what a resource
    /// depends on, for destroy ordering.
    pub fn resource_deps(&self, id: &NodeId) -> BTreeSet<NodeId> {
        let mut out = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&NodeId> = self.deps.get(id).into_iter().flatten().collect();
        while let Some(n) = todo.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            if matches!(n.kind, Kind::Resource(_)) {
                out.insert(n.clone());
            } else {
                todo.extend(self.deps.get(n).into_iter().flatten());
            }
        }
        out
    }
}

/// Whether `count.*` and `each.*` are available where an expression is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ctx {
    /// In a block with `count`.
    pub count: bool,
    /// In a block with `for_each`.
    pub each: bool,
}

/// Calls `f` on every expression of `body` with the names bound where it is (the
/// iterators of the `dynamic` blocks around it).
fn for_each_expr(body: &veeps_lang::config::BodyConfig, f: &mut dyn FnMut(&Expr, &[String])) {
    walk_exprs(body, &mut vec![], f)
}

fn walk_exprs(
    body: &veeps_lang::config::BodyConfig,
    bound: &mut Vec<String>,
    f: &mut dyn FnMut(&Expr, &[String]),
) {
    for a in body.attrs.values() {
        f(&a.expr, bound);
    }
    for b in &body.blocks {
        match b.dynamic_iterator() {
            Some(it) => {
                if let Some(fe) = b.body.attrs.get("for_each") {
                    f(&fe.expr, bound);
                }
                bound.push(it);
                for (k, a) in &b.body.attrs {
                    if k != "for_each" && k != "iterator" {
                        f(&a.expr, bound);
                    }
                }
                for inner in &b.body.blocks {
                    walk_exprs(&inner.body, bound, f);
                }
                bound.pop();
            }
            None => walk_exprs(&b.body, bound, f),
        }
    }
}

/// Resolves a reference made in module `m` at `path` to the nodes it depends on.
pub fn resolve(
    path: &[String],
    m: &ModuleConfig,
    r: &Reference,
    ctx: Ctx,
    outputs_of: &dyn Fn(&str) -> Vec<String>,
) -> Result<Vec<NodeId>, Diagnostic> {
    let at = |kind: Kind| NodeId {
        path: path.to_vec(),
        kind,
    };
    let name0 = r.names.first().map(String::as_str);
    let missing_attr = |what: &str| {
        Diagnostic::at(
            &r.loc,
            format!(
                "invalid reference: \"{}\" must be followed by an attribute name, as in {what}",
                r.root
            ),
        )
    };
    match r.root.as_str() {
        "var" => {
            let n = name0.ok_or_else(|| missing_attr("var.NAME"))?;
            if m.variables.contains_key(n) {
                Ok(vec![at(Kind::Var(n.into()))])
            } else {
                Err(Diagnostic::at(
                    &r.loc,
                    format!(
                        "reference to undeclared input variable \"{n}\".{}",
                        did_you_mean(n, m.variables.keys().map(String::as_str))
                    ),
                )
                .with_detail(format!(
                    "Declare it with a `variable \"{n}\" {{}}` block in {}.",
                    m.dir
                )))
            }
        }
        "local" => {
            let n = name0.ok_or_else(|| missing_attr("local.NAME"))?;
            if m.locals.contains_key(n) {
                Ok(vec![at(Kind::Local(n.into()))])
            } else {
                Err(Diagnostic::at(
                    &r.loc,
                    format!(
                        "reference to undeclared local value \"{n}\".{}",
                        did_you_mean(n, m.locals.keys().map(String::as_str))
                    ),
                ))
            }
        }
        "module" => {
            let n = name0.ok_or_else(|| missing_attr("module.NAME.OUTPUT"))?;
            let Some(call) = m.module_calls.get(n) else {
                return Err(Diagnostic::at(
                    &r.loc,
                    format!(
                        "reference to undeclared module \"{n}\".{}",
                        did_you_mean(n, m.module_calls.keys().map(String::as_str))
                    ),
                ));
            };
            let mut child = path.to_vec();
            child.push(n.to_string());
            let outputs = outputs_of(n);
            let mut out = vec![at(Kind::Call(n.into()))];
            match r.names.get(1) {
                Some(o) if outputs.contains(o) => out.push(NodeId {
                    path: child,
                    kind: Kind::Output(o.clone()),
                }),
                Some(o) => {
                    return Err(Diagnostic::at(
                        &r.loc,
                        format!(
                            "module \"{n}\" has no output \"{o}\".{}",
                            did_you_mean(o, outputs.iter().map(String::as_str))
                        ),
                    )
                    .with_detail(format!(
                        "The module's code is in {}; declare the output there.",
                        call.source.dir()
                    )))
                }
                None => out.extend(outputs.into_iter().map(|o| NodeId {
                    path: child.clone(),
                    kind: Kind::Output(o),
                })),
            }
            Ok(out)
        }
        "data" => {
            let (t, n) = match (r.names.first(), r.names.get(1)) {
                (Some(t), Some(n)) => (t, n),
                _ => return Err(missing_attr("data.TYPE.NAME")),
            };
            let key = format!("data.{t}.{n}");
            if m.data.contains_key(&key) {
                Ok(vec![at(Kind::Data(format!("{t}.{n}")))])
            } else {
                Err(Diagnostic::at(
                    &r.loc,
                    format!(
                        "reference to undeclared data source \"{key}\".{}",
                        did_you_mean(&key, m.data.keys().map(String::as_str))
                    ),
                ))
            }
        }
        "count" => {
            if !ctx.count {
                return Err(Diagnostic::at(
                    &r.loc,
                    "\"count\" can only be used in a block that sets count",
                ));
            }
            match name0 {
                Some("index") => Ok(vec![]),
                _ => Err(Diagnostic::at(
                    &r.loc,
                    "the only attribute of \"count\" is \"index\"",
                )),
            }
        }
        "each" => {
            if !ctx.each {
                return Err(Diagnostic::at(
                    &r.loc,
                    "\"each\" can only be used in a block that sets for_each",
                ));
            }
            match name0 {
                Some("key") | Some("value") => Ok(vec![]),
                _ => Err(Diagnostic::at(
                    &r.loc,
                    "\"each\" has only \"key\" and \"value\"",
                )),
            }
        }
        "path" => match name0 {
            Some("module") | Some("root") | Some("cwd") => Ok(vec![]),
            _ => Err(Diagnostic::at(
                &r.loc,
                "\"path\" has \"module\", \"root\" and \"cwd\"",
            )),
        },
        "terraform" => match name0 {
            Some("workspace") => Ok(vec![]),
            _ => Err(Diagnostic::at(
                &r.loc,
                "\"terraform\" has only \"workspace\" (the environment's name)",
            )),
        },
        "self" => Err(Diagnostic::at(
            &r.loc,
            "\"self\" is only available in provisioners, which veeps does not run",
        )),
        ty => {
            let Some(n) = name0 else {
                return Err(Diagnostic::at(&r.loc, format!("invalid reference \"{ty}\": use var.NAME, local.NAME, TYPE.NAME, data.TYPE.NAME or module.NAME.OUTPUT")));
            };
            let key = format!("{ty}.{n}");
            if m.resources.contains_key(&key) {
                Ok(vec![at(Kind::Resource(key))])
            } else {
                Err(Diagnostic::at(
                    &r.loc,
                    format!(
                        "reference to undeclared resource \"{key}\".{}",
                        did_you_mean(&key, m.resources.keys().map(String::as_str))
                    ),
                )
                .with_detail("Declare it with a `resource` block in this module, or fix the name."))
            }
        }
    }
}
