//! Plans: what apply will do, as data and as text for people.

use serde::{Deserialize, Serialize};
use std::fmt::Write;
use veeps_lang::Value;

/// Counts of changes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    /// Created.
    pub add: u64,
    /// Updated in place.
    pub change: u64,
    /// Destroyed.
    pub destroy: u64,
}

/// What happens to a resource instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Nothing.
    NoOp,
    /// Created.
    Create,
    /// Updated in place.
    Update,
    /// Destroyed and created again (or the other way round with create_before_destroy).
    Replace,
    /// Destroyed.
    Delete,
}

impl Action {
    /// The verb shown in progress lines.
    pub fn verb(self) -> (&'static str, &'static str) {
        match self {
            Action::NoOp => ("Refreshing", "Refresh"),
            Action::Create => ("Creating", "Creation"),
            Action::Update => ("Modifying", "Modifications"),
            Action::Replace => ("Replacing", "Replacement"),
            Action::Delete => ("Destroying", "Destruction"),
        }
    }
}

/// A planned change to one resource instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResourceChange {
    /// Its address.
    pub address: String,
    /// Its type.
    pub type_name: String,
    /// What happens.
    pub action: Action,
    /// Its attributes now (sensitive ones masked as `{"$sensitive": true}`).
    pub before: Option<serde_json::Value>,
    /// Its attributes after (unknown ones as `{"$unknown": true}`).
    pub after: Option<serde_json::Value>,
    /// The attributes whose change forces replacement.
    #[serde(default)]
    pub replace_paths: Vec<String>,
    /// Why, when it is not just the configuration (e.g. deleted outside veeps).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A planned change to a root output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputChange {
    /// Its name.
    pub name: String,
    /// What happens.
    pub action: Action,
    /// Its value after (masked if sensitive).
    pub after: serde_json::Value,
    /// Sensitive.
    pub sensitive: bool,
}

/// A plan for one environment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    /// The environment.
    pub env: String,
    /// Resource changes (no-ops left out).
    pub changes: Vec<ResourceChange>,
    /// Changes made outside veeps, found by reading every resource.
    pub drift: Vec<ResourceChange>,
    /// Output changes.
    pub outputs: Vec<OutputChange>,
    /// Counts.
    pub summary: Summary,
    /// A digest of the plan: apply refuses to run a different one than was approved.
    pub hash: String,
    /// Whether this is a destroy plan.
    pub destroy: bool,
    /// When it was made (RFC 3339, whole seconds): what `plantimestamp()` is.
    #[serde(default)]
    pub time: String,
    /// Objects that keep living under a new address (`moved` blocks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<Moved>,
    /// Instances forgotten without being destroyed (`removed` with `destroy = false`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forgotten: Vec<String>,
    /// Failed `check` assertions and moves that could not be made: shown, never fatal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// An object moved from one address to another.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Moved {
    /// Where state had it.
    pub from: String,
    /// Where it is now.
    pub to: String,
}

impl Plan {
    /// True when applying it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.moved.is_empty()
            && self.forgotten.is_empty()
            && self.outputs.iter().all(|o| o.action == Action::NoOp)
    }

    fn render_warnings(&self, s: &mut String) {
        for w in &self.warnings {
            let _ = writeln!(s, "\nWarning: {w}");
        }
    }

    /// The plan as people read it, Terraform-style.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if !self.drift.is_empty() {
            let _ = writeln!(s, "Note: Objects have changed outside of veeps\n");
            for d in &self.drift {
                match d.action {
                    Action::Delete => {
                        let _ = writeln!(s, "  # {} has been deleted", d.address);
                    }
                    _ => {
                        let _ = writeln!(s, "  # {} has changed", d.address);
                        render_attrs(
                            &mut s,
                            Action::Update,
                            d.before.as_ref(),
                            d.after.as_ref(),
                            &[],
                        );
                    }
                }
                let _ = writeln!(s);
            }
        }
        for m in &self.moved {
            let _ = writeln!(s, "  # {} has moved to {}\n", m.from, m.to);
        }
        for f in &self.forgotten {
            let _ = writeln!(
                s,
                "  # {f} will no longer be managed by veeps (it is forgotten, not destroyed)\n"
            );
        }
        if self.changes.is_empty() {
            if !self.moved.is_empty() || !self.forgotten.is_empty() {
                let _ = writeln!(
                    s,
                    "Plan: 0 to add, 0 to change, 0 to destroy, {} moved, {} forgotten.",
                    self.moved.len(),
                    self.forgotten.len()
                );
                if self.outputs.iter().any(|o| o.action != Action::NoOp) {
                    let _ = writeln!(s, "\nChanges to outputs:");
                    render_outputs(&mut s, &self.outputs);
                }
            } else if self.outputs.iter().any(|o| o.action != Action::NoOp) {
                let _ = writeln!(s, "Changes to outputs:");
                render_outputs(&mut s, &self.outputs);
                let _ = writeln!(s, "\nApplying this plan saves the new output values without changing any resources.");
            } else {
                let _ = writeln!(
                    s,
                    "No changes. Your infrastructure matches the configuration."
                );
            }
            self.render_warnings(&mut s);
            return s;
        }
        let _ = writeln!(s, "veeps will perform the following actions:\n");
        for c in &self.changes {
            let (sym, what) = match c.action {
                Action::Create => ("+", "will be created"),
                Action::Update => ("~", "will be updated in place"),
                Action::Replace => ("-/+", "must be replaced"),
                Action::Delete => ("-", "will be destroyed"),
                Action::NoOp => continue,
            };
            let _ = writeln!(s, "  # {} {what}", c.address);
            if let Some(r) = &c.reason {
                let _ = writeln!(s, "  # ({r})");
            }
            let (ty, name) = type_and_name(&c.address);
            let _ = writeln!(s, "{:>3} resource \"{ty}\" \"{name}\" {{", sym);
            render_attrs(
                &mut s,
                c.action,
                c.before.as_ref(),
                c.after.as_ref(),
                &c.replace_paths,
            );
            let _ = writeln!(s, "    }}\n");
        }
        let _ = writeln!(
            s,
            "Plan: {} to add, {} to change, {} to destroy.",
            self.summary.add, self.summary.change, self.summary.destroy
        );
        if !self.moved.is_empty() || !self.forgotten.is_empty() {
            let _ = writeln!(
                s,
                "({} moved, {} forgotten.)",
                self.moved.len(),
                self.forgotten.len()
            );
        }
        if self.outputs.iter().any(|o| o.action != Action::NoOp) {
            let _ = writeln!(s, "\nChanges to outputs:");
            render_outputs(&mut s, &self.outputs);
        }
        self.render_warnings(&mut s);
        s
    }
}

fn render_outputs(s: &mut String, outputs: &[OutputChange]) {
    for o in outputs {
        let sym = match o.action {
            Action::Create => "+",
            Action::Update => "~",
            Action::Delete => "-",
            _ => continue,
        };
        let _ = writeln!(s, "  {sym} {} = {}", o.name, show(&o.after));
    }
}

fn type_and_name(address: &str) -> (String, String) {
    let last = address_tail(address);
    let (ty, rest) = last.split_once('.').unwrap_or((last, ""));
    (
        ty.to_string(),
        rest.split('[').next().unwrap_or(rest).to_string(),
    )
}

/// Shows a plan JSON value.
pub fn show(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(o)
            if o.get("$unknown") == Some(&serde_json::Value::Bool(true)) =>
        {
            "(known after apply)".into()
        }
        serde_json::Value::Object(o)
            if o.get("$sensitive") == Some(&serde_json::Value::Bool(true)) =>
        {
            "(sensitive value)".into()
        }
        v => Value::from_plan_json(v).to_string(),
    }
}

fn render_attrs(
    s: &mut String,
    action: Action,
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
    replace: &[String],
) {
    let empty = serde_json::Map::new();
    let b = before.and_then(|v| v.as_object()).unwrap_or(&empty);
    let a = after.and_then(|v| v.as_object()).unwrap_or(&empty);
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    let width = keys.iter().map(|k| k.len()).max().unwrap_or(0);
    for k in keys {
        let bv = b.get(k.as_str()).filter(|v| !v.is_null());
        let av = a.get(k.as_str()).filter(|v| !v.is_null());
        let force = if replace.iter().any(|r| r == k) {
            " # forces replacement"
        } else {
            ""
        };
        let line = match (action, bv, av) {
            (Action::Delete, Some(bv), _) => format!("      - {k:width$} = {}", show(bv)),
            (_, None, Some(av)) => format!("      + {k:width$} = {}{force}", show(av)),
            (Action::Create, _, None) => continue,
            (_, Some(bv), Some(av)) if bv == av => {
                if action == Action::Create {
                    format!("      + {k:width$} = {}", show(av))
                } else {
                    format!("        {k:width$} = {}", show(av))
                }
            }
            (_, Some(bv), Some(av)) => {
                format!("      ~ {k:width$} = {} -> {}{force}", show(bv), show(av))
            }
            (_, Some(bv), None) => format!("      - {k:width$} = {} -> null{force}", show(bv)),
            (_, None, None) => continue,
        };
        let _ = writeln!(s, "{line}");
    }
}

/// One progress event of an apply, streamed to the CLI.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// An operation on a resource started.
    Start {
        /// The resource instance.
        address: String,
        /// What is done.
        action: Action,
    },
    /// An operation is still running.
    Progress {
        /// The resource instance.
        address: String,
        /// What is done.
        action: Action,
        /// Seconds since it started.
        elapsed: f64,
    },
    /// An operation finished.
    Done {
        /// The resource instance.
        address: String,
        /// What was done.
        action: Action,
        /// Seconds it took.
        elapsed: f64,
        /// The object's id, if it has one.
        id: Option<String>,
    },
    /// An operation failed.
    Failed {
        /// The resource instance.
        address: String,
        /// What was tried.
        action: Action,
        /// Why it failed.
        error: String,
    },
    /// The apply finished.
    Complete {
        /// The history version recorded.
        version: u64,
        /// `ok`, `partial` or `failed`.
        status: String,
        /// Counts of what was done.
        summary: Summary,
        /// Errors.
        errors: Vec<String>,
        /// Root outputs (sensitive ones masked).
        outputs: serde_json::Map<String, serde_json::Value>,
    },
    /// The apply could not start or stopped (configuration errors, lock held, plan changed).
    Error {
        /// Why.
        message: String,
    },
}

/// Name prefix of the `-var-file` files the CLI puts in a bundle (`.var-file-000-NAME`),
/// numbered in command-line order.
pub const VAR_FILE_PREFIX: &str = ".var-file-";

/// The resource part of an address (`TYPE.NAME[key]`), after any module prefixes.
pub fn address_tail(address: &str) -> &str {
    let mut rest = address;
    while let Some(after) = rest.strip_prefix("module.") {
        // Skip the module name and an optional [key], then the dot.
        let mut depth = 0;
        let mut in_str = false;
        let mut end = None;
        for (i, c) in after.char_indices() {
            match c {
                '"' if depth > 0 => in_str = !in_str,
                '[' if !in_str => depth += 1,
                ']' if !in_str => depth -= 1,
                '.' if depth == 0 && !in_str => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        match end {
            Some(i) => rest = &after[i + 1..],
            None => return rest,
        }
    }
    rest
}
