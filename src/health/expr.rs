//! CEL expressions over live objects, as Flux evaluates them (`fluxcd/pkg` `runtime/cel`):
//! `healthCheckExprs` of a Kustomization or HelmRelease ([`HealthExprs`]) and
//! `dependsOn[].readyExpr` ([`ReadyExpr`]). PURE.
//!
//! - An object's top-level fields (`apiVersion`, `kind`, `metadata`, `spec`, `status`...) are
//!   the variables of a health expression: `status.conditions.filter(e, e.type == 'Ready')...`.
//! - A health rule applies to objects of its `apiVersion`'s group and its `kind` (all kinds of
//!   the group when `kind` is empty; a kind's rule wins over its group's). Two rules for one
//!   group and kind are an error, as in Flux.
//! - Evaluation, as Flux's `StatusEvaluator`: `status.observedGeneration` present and ≠
//!   `metadata.generation` → InProgress without evaluating; then `inProgress`, `failed`,
//!   `current` in this order, the first `true` gives the status; none `true` → InProgress. An
//!   evaluation error (a missing field, a result that is not a boolean) → `Unknown` with the
//!   error as message (kstatus' generic reader turns a reader error into Unknown), so the
//!   wait continues until the timeout names it.
//! - Objects no rule matches are judged by [`super::kstatus::flux`].
//! - Compilation errors are reported at validation time with Flux's messages: the caller sets
//!   `Stalled` with reason `InvalidCELExpression` (terminal until the spec changes).

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr as Ast, IdedExpr, MapExpr, StructExpr};
use cel::{Context, Env, Program, Value as CelValue};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::kstatus::{self, Health, Status};
use crate::api::kustomization::CustomHealthCheck;

/// An invalid CEL rule: the message is Flux's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidExpr(pub String);

/// The CEL environment: the standard library, optional types and the strings extension (Flux
/// also enables cel-go's strings, sets and encoders extensions).
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib().with_optional_support(true);
    env.add_extension(cel::extensions::strings)
        .expect("the strings extension declares once");
    Arc::new(env)
});

/// One parsed expression and its source (for messages).
#[derive(Debug)]
struct Expr {
    source: String,
    program: Program,
}

impl Expr {
    fn parse(source: &str) -> Result<Expr, String> {
        ENV.compile(source)
            .map(|program| Expr {
                source: source.to_string(),
                program,
            })
            .map_err(|e| format!("failed to parse the CEL expression '{source}': {e}"))
    }

    /// Evaluate to a boolean in `ctx`; Flux's messages on error.
    fn evaluate_bool(&self, ctx: &Context) -> Result<bool, String> {
        match self.program.execute(ctx) {
            Ok(CelValue::Bool(b)) => Ok(b),
            Ok(_) => Err(format!(
                "failed to evaluate CEL expression as boolean: '{}'",
                self.source
            )),
            Err(e) => Err(format!(
                "failed to evaluate the CEL expression '{}': {e}",
                self.source
            )),
        }
    }
}

/// A context with `vars` bound (each converted once, however many expressions read it).
fn context<'a>(
    vars: impl IntoIterator<Item = (&'a str, &'a Value)>,
) -> Result<Context<'static, 'static>, String> {
    let mut ctx = Context::with_env(Arc::clone(&ENV));
    for (name, value) in vars {
        let value = cel::to_value(value)
            .map_err(|e| format!("failed to convert '{name}' to a CEL value: {e}"))?;
        ctx.add_variable_from_value(name, value);
    }
    Ok(ctx)
}

/// The `current`/`inProgress`/`failed` expressions of one rule, parsed (Flux's
/// `StatusEvaluator`).
#[derive(Debug)]
pub struct StatusEvaluator {
    current: Expr,
    failed: Option<Expr>,
    in_progress: Option<Expr>,
}

impl StatusEvaluator {
    /// Parse a rule. Errors: `current` empty ("expression Current not specified") or an
    /// expression that does not parse ("failed to parse the expression Failed: ...").
    pub fn new(
        current: &str,
        in_progress: Option<&str>,
        failed: Option<&str>,
    ) -> Result<StatusEvaluator, String> {
        if current.is_empty() {
            return Err("expression Current not specified".into());
        }
        let optional = |name: &str, e: Option<&str>| -> Result<Option<Expr>, String> {
            match e.filter(|e| !e.is_empty()) {
                None => Ok(None),
                Some(e) => Expr::parse(e)
                    .map(Some)
                    .map_err(|m| format!("failed to parse the expression {name}: {m}")),
            }
        };
        Ok(StatusEvaluator {
            current: Expr::parse(current)
                .map_err(|m| format!("failed to parse the expression Current: {m}"))?,
            failed: optional("Failed", failed)?,
            in_progress: optional("InProgress", in_progress)?,
        })
    }

    /// The health of `obj` by these expressions (see the module docs for the order).
    pub fn evaluate(&self, obj: &Value) -> Health {
        if let (Some(observed), Some(generation)) = (
            obj["status"]["observedGeneration"].as_i64(),
            obj["metadata"]["generation"].as_i64(),
        ) && observed != generation
        {
            return Health::new(Status::InProgress, "");
        }
        let vars = obj
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v));
        let ctx = match context(vars) {
            Ok(ctx) => ctx,
            Err(e) => return Health::new(Status::Unknown, e),
        };
        let steps = [
            (self.in_progress.as_ref(), Status::InProgress),
            (self.failed.as_ref(), Status::Failed),
            (Some(&self.current), Status::Current),
        ];
        for (expr, status) in steps {
            let Some(expr) = expr else { continue };
            match expr.evaluate_bool(&ctx) {
                Ok(true) => return Health::new(status, ""),
                Ok(false) => {}
                Err(e) => return Health::new(Status::Unknown, e),
            }
        }
        Health::new(Status::InProgress, "")
    }
}

/// The `healthCheckExprs` of one object, parsed once per spec change: a rule per group and
/// kind.
#[derive(Debug, Default)]
pub struct HealthExprs {
    /// `(group, kind)`; `kind` empty for a rule over a whole group.
    rules: Vec<((String, String), StatusEvaluator)>,
}

impl HealthExprs {
    /// Parse every rule. Errors, with Flux's messages: "duplicate custom health check for
    /// GroupKind Kind.group at healthchecks[i]", "failed to create custom status evaluator for
    /// healthchecks[i]: ...".
    pub fn compile(checks: &[CustomHealthCheck]) -> Result<HealthExprs, InvalidExpr> {
        let mut rules: Vec<((String, String), StatusEvaluator)> = Vec::new();
        for (i, c) in checks.iter().enumerate() {
            let group = c
                .api_version
                .rsplit_once('/')
                .map_or("", |(g, _)| g)
                .to_string();
            let kind = c.kind.clone().unwrap_or_default();
            let key = (group, kind);
            if rules.iter().any(|(k, _)| *k == key) {
                return Err(InvalidExpr(format!(
                    "duplicate custom health check for GroupKind {} at healthchecks[{i}]",
                    group_kind_string(&key.0, &key.1)
                )));
            }
            let evaluator =
                StatusEvaluator::new(&c.current, c.in_progress.as_deref(), c.failed.as_deref())
                    .map_err(|e| {
                        InvalidExpr(format!(
                            "failed to create custom status evaluator for healthchecks[{i}]: {e}"
                        ))
                    })?;
            rules.push((key, evaluator));
        }
        Ok(HealthExprs { rules })
    }

    /// The rule for objects of `group` and `kind`: the kind's, else the group's.
    pub fn rule_for(&self, group: &str, kind: &str) -> Option<&StatusEvaluator> {
        let find = |k: &str| {
            self.rules
                .iter()
                .find(|((g, rk), _)| g == group && rk == k)
                .map(|(_, e)| e)
        };
        find(kind).or_else(|| find(""))
    }

    /// The health of `obj`: by its CEL rule when one matches, else as Flux's health checks
    /// ([`kstatus::flux`]).
    pub fn health(&self, obj: &Value, now: Timestamp) -> Health {
        let (group, kind) = kstatus::group_kind(obj);
        match self.rule_for(group, kind) {
            Some(rule) => rule.evaluate(obj),
            None => kstatus::flux(obj, now),
        }
    }
}

/// Go's `schema.GroupKind.String()`: `Kind.group`, or `Kind` for the core group.
fn group_kind_string(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

/// A `dependsOn[].readyExpr`: CEL over `self` (the dependent object) and `dep` (the
/// dependency), which must be a boolean. Flux type-checks it with only `self` and `dep`
/// declared; here a reference to another variable is rejected at parse time and a
/// non-boolean result at evaluation.
#[derive(Debug)]
pub struct ReadyExpr(Expr);

impl ReadyExpr {
    /// Parse. Errors: a syntax error, or a variable other than `self` and `dep` (in Flux's
    /// words, "failed to parse the CEL expression '...': ... undeclared reference to 'x'").
    pub fn parse(source: &str) -> Result<ReadyExpr, InvalidExpr> {
        let expr = Expr::parse(source).map_err(InvalidExpr)?;
        let mut free = std::collections::BTreeSet::new();
        free_variables(expr.program.expression(), &mut Vec::new(), &mut free);
        let undeclared: Vec<&str> = free
            .iter()
            .map(String::as_str)
            .filter(|v| !matches!(*v, "self" | "dep"))
            .collect();
        if let Some(v) = undeclared.first() {
            return Err(InvalidExpr(format!(
                "failed to parse the CEL expression '{source}': undeclared reference to '{v}'"
            )));
        }
        Ok(ReadyExpr(expr))
    }

    /// Whether the dependency is ready by this expression. Errors: an evaluation error or a
    /// result that is not a boolean, with Flux's message.
    pub fn evaluate(&self, this: &Value, dep: &Value) -> Result<bool, String> {
        self.0
            .evaluate_bool(&context([("self", this), ("dep", dep)])?)
    }
}

/// `dependsOn[].readyExpr` as `gitops::depends_on::ReadyExprEval` takes it: parse and
/// evaluate (the expression was validated with [`ReadyExpr::parse`] when the spec was read).
pub fn eval_ready_expr(expr: &str, this: &Value, dep: &Value) -> Result<bool, String> {
    ReadyExpr::parse(expr).map_err(|e| e.0)?.evaluate(this, dep)
}

/// The variables `expr` reads that no enclosing comprehension (`exists(c, ...)`, `filter`...)
/// binds, into `out`.
fn free_variables(expr: &IdedExpr, bound: &mut Vec<String>, out: &mut BTreeSet<String>) {
    match &expr.expr {
        Ast::Unspecified | Ast::Literal(_) => {}
        Ast::Ident(name) => {
            // `@`-names are the accumulators the macros introduce.
            if !name.starts_with('@') && !bound.contains(name) {
                out.insert(name.clone());
            }
        }
        Ast::Call(call) => {
            for e in call.target.iter().map(|t| &**t).chain(&call.args) {
                free_variables(e, bound, out);
            }
        }
        Ast::Select(select) => free_variables(&select.operand, bound, out),
        Ast::List(list) => {
            for e in &list.elements {
                free_variables(e, bound, out);
            }
        }
        Ast::Map(MapExpr { entries }) | Ast::Struct(StructExpr { entries, .. }) => {
            for entry in entries {
                match &entry.expr {
                    EntryExpr::StructField(f) => free_variables(&f.value, bound, out),
                    EntryExpr::MapEntry(m) => {
                        free_variables(&m.key, bound, out);
                        free_variables(&m.value, bound, out);
                    }
                }
            }
        }
        Ast::Comprehension(c) => {
            free_variables(&c.iter_range, bound, out);
            free_variables(&c.accu_init, bound, out);
            let scope = bound.len();
            bound.push(c.iter_var.clone());
            bound.extend(c.iter_var2.clone());
            bound.push(c.accu_var.clone());
            for e in [&c.loop_cond, &c.loop_step, &c.result] {
                free_variables(e, bound, out);
            }
            bound.truncate(scope);
        }
    }
}

#[cfg(test)]
#[path = "expr_tests.rs"]
mod tests;
